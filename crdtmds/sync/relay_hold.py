"""Persist before forward: which received documents `crdtmds.sync.gossip.Gossip` must not
send on yet, and which servers wait for a document until the next relay release.

A document whose heads a peer's message moved is held once per such message, and stays
out of every connection's sync messages until each one is persisted. Then it goes to
every peer that follows it, or, when the node relays later and only servers brought the
changes, to the senders and repo clients now and to the other servers at the next
release (in a full mesh those got the changes from their origin). No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from crdtmds.sync.connection import Connection, ConnectionState


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
        held, or it was marked dirty here for its senders and repo clients and the other
        servers wait for ``release``."""
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
        # The senders hear our new heads now (so they stop offering the changes); other
        # servers get them at the next release, along with whatever else came by then.
        for conn in self._connections.values():
            if conn.state is ConnectionState.CONNECTED and conn.should_sync(document_id):
                if conn.conn_id in sources or not conn.peer_info.is_server:
                    conn.dirty[document_id] = None
                else:
                    self._relays.setdefault(document_id, set()).add(conn.conn_id)
        return False

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
