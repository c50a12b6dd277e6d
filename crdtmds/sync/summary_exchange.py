"""The heads summary (`crdtmds.sync.heads_summary`) on the connections of
`crdtmds.sync.gossip.Gossip`: starting it when a server that offers it connects, its two
messages, and which domains each side then syncs. No I/O.
"""

from __future__ import annotations

from typing import Any

from crdtmds.sync import heads_summary
from crdtmds.sync.connection import Connection
from crdtmds.sync.heads_summary import Exchange, HeadsSource
from crdtmds.sync.protocol import Ephemeral, encode


class SummaryExchanges:
    """The exchanges under way or done, by connection id."""

    def __init__(
        self, source: HeadsSource | None, local_peer_id: str, carrier_document: str
    ) -> None:
        self.source = source
        self._local_peer_id = local_peer_id
        self._carrier = carrier_document
        """The document the ephemeral messages are about (the cluster document)."""
        self._by_conn: dict[str, Exchange] = {}
        self._count = 0

    def start(self, conn: Connection) -> bool:
        """Open the exchange with a server that offers it; False for any other peer (it
        gets the plain anti-entropy round), and always without a `HeadsSource`."""
        peer_key = heads_summary.wants_summary(conn.peer_info.metadata)
        if peer_key is None or self.source is None:
            return False
        exchange = self._by_conn[conn.conn_id] = Exchange(peer_key)
        exchange.ours = heads_summary.listed(self.source, peer_key)
        self._send(conn, heads_summary.encode_listed(exchange.ours))
        return True

    def peer_key(self, conn_id: str) -> str | None:
        exchange = self._by_conn.get(conn_id)
        return exchange.peer_key if exchange else None

    def holds(self, document_id: str) -> bool:
        return self.source is not None and self.source.holds(document_id)

    def receive(self, conn: Connection, message: Ephemeral) -> bool:
        """Take a summary message from the peer; False for any other ephemeral message.
        ProtocolError when it is malformed."""
        if message.session_id != heads_summary.SUMMARY_SESSION:
            return False
        exchange = self._by_conn.get(conn.conn_id)
        fields = heads_summary.decode(message.data)
        if exchange is None or exchange.done or self.source is None:
            return True  # a summary this side did not ask for is ignored
        self._take(conn, exchange, fields, self.source)
        return True

    def _take(
        self, conn: Connection, exchange: Exchange, fields: dict[str, Any], source: HeadsSource
    ) -> None:
        if "listed" in fields:
            exchange.theirs = fields["listed"]
            excluded = {*exchange.ours, *exchange.theirs}
            exchange.our_digest = heads_summary.digest(source, exchange.peer_key, excluded)
            answers = heads_summary.answers(source, exchange)
            self._send(conn, heads_summary.encode_digest(exchange.our_digest, answers))
            return
        if exchange.theirs is None:
            return  # a digest before the list: out of order, wait for the list
        exchange.done = True
        exchange.answers = fields["answers"]
        match = fields["digest"] == exchange.our_digest
        for document_id in heads_summary.to_sync(exchange, source, match):
            self._follow(conn, source, document_id, exchange.peer_key if match else None)

    def settled(self, conn: Connection, document_id: str, heads: list[bytes]) -> None:
        """The peer named our heads: a domain's record with a server (kept with one that
        does not offer the summary too, for when it does)."""
        peer = conn.peer_info
        peer_key = peer.metadata.get("server-id") if peer.is_server else None
        if isinstance(peer_key, str) and self.source is not None and self.source.holds(document_id):
            self.source.record_agreed(peer_key, document_id, heads)

    def seed_link(self, conn: Connection, document_id: str) -> None:
        """A domain's first sync on this connection after the exchange: start from the
        heads agreed with the peer (see `crafted_first_message`)."""
        peer_key = self.peer_key(conn.conn_id)
        if peer_key is not None and self.source is not None and document_id not in conn.links:
            conn.link(document_id).since = self.source.agreed(peer_key).get(document_id)

    def forget(self, conn_id: str) -> None:
        self._by_conn.pop(conn_id, None)

    def _follow(
        self, conn: Connection, source: HeadsSource, document_id: str, peer_key: str | None
    ) -> None:
        """The dialer sends the first message about a domain to sync; the listener waits
        for it (both sending at once would send each side's changes twice)."""
        if not conn.peer_info.may_read(document_id):
            return
        held = source.holds(document_id)
        link = conn.link(document_id)
        if not conn.dialer:
            return
        if peer_key is not None and held:
            link.since = source.agreed(peer_key).get(document_id)
        if not held:
            link.requested_by_us = True
        conn.dirty[document_id] = None

    def _send(self, conn: Connection, data: bytes) -> None:
        self._count += 1
        message = Ephemeral(
            sender_id=self._local_peer_id,
            target_id=conn.peer_info.peer_id,
            document_id=self._carrier,
            count=self._count,
            session_id=heads_summary.SUMMARY_SESSION,
            data=data,
        )
        conn.outbox.append(encode(message))
