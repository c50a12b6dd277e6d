"""Persist before forward: which received documents `crdtmds.sync.gossip.Gossip` must not
send on yet, and which servers wait for a document until the next relay release.

A document whose heads a peer's message moved is held once per such message, and stays
out of every connection's sync messages until each one is persisted. Then it goes to
every peer that follows it, or, when the node relays later and only servers brought the
changes, to repo clients now and to the servers, their senders included, at the next
release (in a full mesh the others got the changes from their origin, and a sender goes
on without an answer). Likewise the reply to a server's message that changed nothing
(`answer`). No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from crdtmds.sync.connection import Connection, ConnectionState
from crdtmds.sync.sync_message import try_parse_sync_message


class RelayHold:
    """Held documents, the connections that brought their changes, and relays that wait
    for `release`, over the connections of one `Gossip` (shared, not copied)."""

    def __init__(self, connections: Mapping[str, Connection]) -> None:
        self._connections = connections
        self._holds: dict[str, int] = {}
        """Per held document, how many received messages are not yet persisted."""
        self._sources: dict[str, set[str]] = {}
        """Per held document, the connections whose messages brought the changes."""
        self._relays: dict[str, set[str]] = {}
        """Per document, servers to send it to at ``release``."""
        self._local: dict[str, int] = {}
        """Per document, local publishes written to it and not yet durable."""

    def hold(self, document_id: str, conn_id: str) -> None:
        """A message on `conn_id` changed the document: hold it until persisted."""
        self._holds[document_id] = self._holds.get(document_id, 0) + 1
        self._sources.setdefault(document_id, set()).add(conn_id)

    def is_held(self, document_id: str) -> bool:
        return document_id in self._holds or document_id in self._local

    def hold_local(self, document_id: str, held: bool = True) -> None:
        """Send none of the document while a local publish is not durable (`held`)."""
        count = self._local.pop(document_id, 0) + (1 if held else -1)
        self._local.update({document_id: count} if count > 0 else {})

    def persisted(self, document_id: str, *, relay_later: bool) -> bool:
        """One held message of the document is on disk. True when the document is now due
        to every peer that follows it (the caller marks it changed); otherwise it is still
        held, or it was marked dirty here for repo clients and the servers wait for
        ``release``."""
        holds = self._holds.get(document_id, 0)
        if holds == 0:
            raise RuntimeError(f"persisted({document_id!r}) without a pending DocumentChanged")
        if holds > 1:
            self._holds[document_id] = holds - 1
            return False
        del self._holds[document_id]
        sources = self._sources.pop(document_id, set())
        if not relay_later or not all(self._from_server(c) for c in sources):
            return True
        # Repo clients hear of the changes now; servers, the senders included, at the next
        # release, along with whatever else came by then. A sender needs no answer to go
        # on: Automerge remembers what it sent and sends only newer changes meanwhile, so
        # an answer per change would only be a frame more each way.
        for conn in self._connections.values():
            if conn.state is ConnectionState.CONNECTED and conn.should_sync(document_id):
                if not conn.peer_info.is_server:
                    conn.dirty[document_id] = None
                else:
                    self._relays.setdefault(document_id, set()).add(conn.conn_id)
        return False

    def answer(self, conn: Connection, document_id: str, data: bytes, *, may_wait: bool) -> None:
        """The sync message `data` on `conn` left the document's heads alone: the reply is
        due now, or, when `may_wait` and the peer is a server, the message asks for no
        change and no reply is due already, at the next ``release`` along with whatever
        else is due to that server by then."""
        waits = may_wait and conn.peer_info.is_server and document_id not in conn.dirty
        message = try_parse_sync_message(data) if waits else None
        if message is not None and not message.need:
            self._relays.setdefault(document_id, set()).add(conn.conn_id)
        else:
            conn.dirty[document_id] = None

    def forget_relays(self, document_id: str) -> None:
        """The document is due to every peer anyway: no server waits for it any more."""
        self._relays.pop(document_id, None)

    def relays_pending(self) -> bool:
        return bool(self._relays)

    def release(self) -> None:
        """Mark every waiting relay dirty on its connection, if still connected."""
        relays, self._relays = self._relays, {}
        for document_id, conn_ids in relays.items():
            for conn_id in conn_ids:
                conn = self._connections.get(conn_id)
                if conn is not None and conn.state is ConnectionState.CONNECTED:
                    conn.dirty[document_id] = None

    def _from_server(self, conn_id: str) -> bool:
        conn = self._connections.get(conn_id)
        return conn is not None and conn.peer is not None and conn.peer.is_server
