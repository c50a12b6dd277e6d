"""Per-peer sync bookkeeping of the automerge-repo protocol, without any I/O.

A :class:`Gossip` holds every peer connection of one node: its handshake state, one
Automerge ``SyncState`` per (connection, document), and the set of documents that have
something to tell each peer. It never touches a socket, a clock or the disk. The caller
(the node's asyncio layer) moves bytes::

    gossip.open_connection(conn_id, dialer=True, local_metadata={...})
    send(gossip.data_to_send(conn_id))          # the join
    for event in gossip.receive(conn_id, frame):  # one WebSocket binary message
        ...                                       # authenticate, persist, report
    send(gossip.data_to_send(conn_id))

and, after a local publish, calls ``document_changed(document_id)`` followed by
``data_to_send`` for every connection. Received changes are reported as
:class:`DocumentChanged`; the caller persists them and calls ``persisted``, and only then
are they forwarded, so a change survives the crash of the server that forwards it.

The same object therefore serves a live server, a test's fake network (no sockets), and
any future transport.

The rules :class:`Gossip` follows:

1. One ``SyncState`` per (connection, document), created fresh with each connection,
   so a reconnect is a full anti-entropy round: when a handshake completes, every
   document in ``store.shared_documents(peer)`` that the peer may read is marked dirty
   for it.
2. Each connection has a dirty set. ``data_to_send`` makes at most one message per
   dirty document (``generate_sync_message``; None means nothing to say), so a burst
   of ``document_changed`` calls coalesces. The message is a ``request`` while we hold
   no data for the document (empty heads) and the peer has not written to us about
   it, else a ``sync``.
3. Persist before forward: when a received message changes a document's heads, the
   document is held -- left out of every connection's ``data_to_send``, the sender's
   reply included -- until ``persisted`` has been called once per
   :class:`DocumentChanged`; it is then dirty for every peer that follows it. A message
   that leaves the heads alone marks only its sender dirty (the protocol's reply).
   With ``persisted(..., relay_later=True)``, changes that came from servers only are
   made dirty at once for their senders and for repo clients, and for the other
   servers at the next ``release_relays`` (in a full mesh those got them from their
   origin). The bookkeeping is `crdtmds.sync.relay_hold.RelayHold`.
4. A peer with ``may_write=False`` whose sync message carries changes is refused with
   an error ("changes refused: ...") and :class:`ConnectionFailed`; the changes never
   reach the live document (see `crdtmds.sync.sync_message.sync_message_has_changes`).
5. A peer never receives data of a document it may not read: its messages about one
   are answered with doc-unavailable. A message about a document we lack asks
   ``store.accept_document``; None, or a request we can only answer with an empty
   document, is answered with doc-unavailable, and the peer keeps following the
   document, so it is sent the document once ``document_changed`` or ``persisted``
   is called for it.
6. Handshake: a dialer sends ``join`` with our metadata and waits for ``peer``, which
   yields :class:`PeerConnected` with the PeerInfo made by ``on_peer`` (default
   :func:`crdtmds.sync.peers.default_peer_info`; raising a CrdtmdsError there refuses
   the peer). A listener yields :class:`JoinReceived` and the caller must ``accept`` or
   ``reject`` before any other message is processed; anything else first is a protocol
   error.
   A join that does not offer version "1" gets "unsupported protocol version" and the
   connection closes. Every malformed frame or message out of place gets an error
   and :class:`ConnectionFailed` for that connection alone; after an error, sent or
   received, everything from the peer is ignored.
7. Ephemeral messages go on to every other connection whose peer may read and follows
   the document, each message once (remembered by sender, session and count), and
   never back to a mesh loop's origin (our own sender id), by
   `crdtmds.sync.ephemeral.EphemeralRelay`; the message types listed as ignored by the
   protocol are dropped.
8. Outgoing messages carry our ``local_peer_id`` as senderId and the peer's id as
   targetId (forwarded ephemeral messages keep their original sender).
9. A peer that names a document beyond ``max_documents_per_connection`` distinct
   documents on one connection gets an error and the connection closes.
10. No sync frame we send exceeds ``max_sync_message_size`` bytes, unless one change
    alone does: a larger sync message is sent as several, its changes shared out
    between them (see `crdtmds.sync.sync_message.split_sync_message`).

A peer "follows" a document when it was announced to it, it has sent a message about
it, or we requested it from that peer. Servers are sent every document they may read
whether they follow it or not.

Misuse by the caller (an unknown conn_id, ``accept`` out of turn) raises KeyError or
RuntimeError; ``receive`` and ``data_to_send`` on a forgotten connection return [].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from automerge.core import Document, Message

from crdtmds.errors import CrdtmdsError, ProtocolError, is_core_error
from crdtmds.sync.connection import Connection, ConnectionState
from crdtmds.sync.ephemeral import EphemeralRelay
from crdtmds.sync.peers import PeerInfo, default_peer_info
from crdtmds.sync.protocol import (
    MAX_MESSAGE_SIZE_DEFAULT,
    PROTOCOL_VERSION,
    DocUnavailable,
    Ephemeral,
    Error,
    Ignored,
    Join,
    Peer,
    Request,
    Sync,
    decode,
    encode,
)
from crdtmds.sync.relay_hold import RelayHold
from crdtmds.sync.summary_exchange import SummaryExchanges
from crdtmds.sync.sync_message import sync_message_has_changes, try_parse_sync_message

__all__ = [
    "ConnectionFailed",
    "DocumentChanged",
    "DocumentStore",
    "DocumentUnavailableFromPeer",
    "Event",
    "Gossip",
    "JoinReceived",
    "PeerConnected",
]

MAX_DOCUMENTS_PER_CONNECTION_DEFAULT = 10_000
"""How many distinct documents one connection may involve (each costs a sync state)."""
MAX_SYNC_MESSAGE_SIZE_DEFAULT = 1024 * 1024
"""Bytes in one sync frame we send: the frame limit of stock automerge-repo clients (the
`websockets` default that Python's `automerge.repo` transport keeps)."""


# ---------------------------------------------------------------------------------- store


class DocumentStore(Protocol):
    """The node's live documents, as :class:`Gossip` sees them."""

    def get_document(self, document_id: str) -> Document | None:
        """The live document, or None when this node does not hold it."""
        ...

    def accept_document(self, document_id: str, peer: PeerInfo) -> Document | None:
        """Called when ``peer`` syncs or requests a document this node lacks.

        Return a new empty live document to take it, or None to answer doc-unavailable.
        """
        ...

    def shared_documents(self, peer: PeerInfo) -> Iterable[str]:
        """Ids announced to ``peer`` when its connection opens (anti-entropy)."""
        ...


# --------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class JoinReceived:
    """A listener got the peer's join. Authenticate, then call ``accept`` or ``reject``."""

    conn_id: str
    join: Join


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A dialer's handshake completed; documents now flow on this connection."""

    conn_id: str
    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class DocumentChanged:
    """A peer's changes were applied to the live document.

    Persist ``doc.get_changes(before_heads)``, then call ``Gossip.persisted(document_id)``
    (once per event); until then the document is sent to nobody.
    """

    conn_id: str
    document_id: str
    before_heads: list[bytes]
    chunks: tuple[bytes, ...] = ()
    """The change chunks the message carried, which are usually exactly the changes applied
    (`changes.applied_chunks` tells)."""


@dataclass(frozen=True, slots=True)
class DocumentUnavailableFromPeer:
    """The peer does not have, or will not share, a document we asked it about."""

    conn_id: str
    document_id: str


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The connection is closed in the state machine.

    Send what ``data_to_send`` still returns (usually an error frame), then close the
    socket and call ``close_connection``.
    """

    conn_id: str
    message: str


Event = (
    JoinReceived | PeerConnected | DocumentChanged | DocumentUnavailableFromPeer | ConnectionFailed
)


# ------------------------------------------------------------------------ connection state


# Every legal incoming message per state, and the method that handles it. `error` and the
# ignored message types are legal in every open state; anything else is a protocol error,
# and nothing at all is processed once the connection is closed.
_HANDLERS: dict[ConnectionState, dict[type, str]] = {
    ConnectionState.AWAITING_JOIN: {Join: "_on_join"},
    ConnectionState.AWAITING_ACCEPT: {},
    ConnectionState.AWAITING_PEER: {Peer: "_on_peer"},
    ConnectionState.CONNECTED: {
        Request: "_on_sync",
        Sync: "_on_sync",
        DocUnavailable: "_on_doc_unavailable",
        Ephemeral: "_on_ephemeral",
    },
    ConnectionState.CLOSED: {},
}

_WIRE_NAMES: dict[type, str] = {
    Join: "join",
    Peer: "peer",
    Request: "request",
    Sync: "sync",
    DocUnavailable: "doc-unavailable",
    Ephemeral: "ephemeral",
}


# ----------------------------------------------------------------------------------- gossip


class Gossip:
    """Every peer connection of one node and their per-(peer, document) sync states,
    following the rules of the module docstring."""

    def __init__(
        self,
        local_peer_id: str,
        store: DocumentStore,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE_DEFAULT,
        max_documents_per_connection: int = MAX_DOCUMENTS_PER_CONNECTION_DEFAULT,
        max_sync_message_size: int = MAX_SYNC_MESSAGE_SIZE_DEFAULT,
        on_peer: Callable[[str, Peer], PeerInfo] | None = None,
        summaries: SummaryExchanges | None = None,
    ) -> None:
        self.local_peer_id = local_peer_id
        self._store = store
        self._max_message_size = max_message_size
        self._max_documents = max_documents_per_connection
        self._max_sync_message_size = max_sync_message_size
        self._peer_info_for = on_peer or (lambda _conn_id, peer: default_peer_info(peer))
        self._connections: dict[str, Connection] = {}
        self._hold = RelayHold(self._connections)
        """Persist before forward (rule 3): held documents and relays that wait."""
        self.hold_local, self.is_held = self._hold.hold_local, self._hold.is_held
        self._fresh: dict[str, list[tuple[bytes, bytes]]] = {}
        """Per document, the changes of `local_changes` for the next `document_changed`."""
        self._ephemeral = EphemeralRelay(local_peer_id)
        self._summaries = summaries or SummaryExchanges(None, local_peer_id, "")
        """The heads summary with servers that offer it (`crdtmds.sync.heads_summary`)."""

    # ---------------------------------------------------------------- connections

    def open_connection(
        self, conn_id: str, *, dialer: bool, local_metadata: dict[str, Any]
    ) -> None:
        """Start tracking a new socket. A dialer queues its join: call ``data_to_send``."""
        if conn_id in self._connections:
            raise ValueError(f"connection {conn_id!r} is already open")
        state = ConnectionState.AWAITING_PEER if dialer else ConnectionState.AWAITING_JOIN
        conn = Connection(conn_id, dialer, dict(local_metadata), state)
        self._connections[conn_id] = conn
        if dialer:
            join = Join(
                sender_id=self.local_peer_id,
                supported_protocol_versions=(PROTOCOL_VERSION,),
                peer_metadata=conn.local_metadata,
            )
            conn.outbox.append(encode(join))

    def accept(self, conn_id: str, peer: PeerInfo, local_metadata: dict[str, Any]) -> None:
        """Admit the peer whose join was reported by :class:`JoinReceived`.

        Queues the ``peer`` reply and the anti-entropy round; call ``data_to_send``.
        """
        conn = self._connections[conn_id]
        if conn.state is not ConnectionState.AWAITING_ACCEPT:
            raise RuntimeError(f"accept() on connection {conn_id!r} in state {conn.state.value}")
        assert conn.join is not None
        conn.local_metadata = dict(local_metadata)
        reply = Peer(
            sender_id=self.local_peer_id,
            target_id=conn.join.sender_id,
            selected_protocol_version=PROTOCOL_VERSION,
            peer_metadata=conn.local_metadata,
        )
        conn.outbox.append(encode(reply))
        self._connect(conn, peer)

    def reject(self, conn_id: str, message: str) -> None:
        """Refuse or drop the peer: queue an error frame and close the connection."""
        conn = self._connections[conn_id]
        if conn.state is not ConnectionState.CLOSED:
            self._fail(conn, message)

    def close_connection(self, conn_id: str) -> None:
        """Forget the connection and its sync states (the socket is gone)."""
        self._connections.pop(conn_id, None)
        self._summaries.forget(conn_id)

    def connections(self) -> list[str]:
        return list(self._connections)

    def peer(self, conn_id: str) -> PeerInfo | None:
        conn = self._connections.get(conn_id)
        return conn.peer if conn else None

    def is_closed(self, conn_id: str) -> bool:
        conn = self._connections.get(conn_id)
        return conn is None or conn.state is ConnectionState.CLOSED

    def state(self, conn_id: str) -> ConnectionState:
        return self._connections[conn_id].state

    # ---------------------------------------------------------------- documents

    def request_document(self, conn_id: str, document_id: str) -> None:
        """Ask the peer for a document we do not have yet; call ``data_to_send``.

        Allowed before the handshake completes: the request then goes out right after it.
        """
        conn = self._connections[conn_id]
        conn.link(document_id).requested_by_us = True
        conn.dirty[document_id] = None

    def local_changes(self, document_id: str, changes: Iterable[tuple[bytes, bytes]]) -> None:
        """The (hash, chunk) pairs of a local publish, told before its `document_changed`.

        No peer can hold them yet, so the next message to each server carries them even
        when that server's Bloom filter claims it has them: Automerge's filters are wrong
        about one time in a hundred, and the server would then need a round trip more
        to ask for them.
        """
        self._fresh.setdefault(document_id, []).extend(changes)

    def document_changed(self, document_id: str) -> None:
        """A local change (a publish): mark the document dirty for every peer of it."""
        self._hold.forget_relays(document_id)
        fresh = self._fresh.pop(document_id, [])
        for conn in self._connections.values():
            if conn.state is ConnectionState.CONNECTED and conn.should_sync(document_id):
                self._summaries.seed_link(conn, document_id)
                conn.dirty[document_id] = None
                if fresh and conn.peer_info.is_server:
                    conn.link(document_id).fresh.extend(fresh)

    def persisted(self, document_id: str, *, relay_later: bool = False) -> None:
        """The changes of one :class:`DocumentChanged` are on disk.

        When every such event of the document is persisted, it is dirty for every peer.
        With `relay_later` (the node has a live link to every server of its cluster, so
        changes from a server most likely reached the others straight from their origin),
        changes that came from servers only go to the other servers at the next
        ``release_relays``. Changes from repo clients never wait.
        """
        if self._hold.persisted(document_id, relay_later=relay_later):
            self.document_changed(document_id)

    def relays_pending(self) -> bool:
        """Whether changes wait for ``release_relays`` (see ``persisted``)."""
        return self._hold.relays_pending()

    def release_relays(self) -> None:
        """Mark every waiting relay dirty; call ``data_to_send`` for every connection."""
        self._hold.release()

    def has_data_to_send(self, conn_id: str) -> bool:
        """Whether ``data_to_send`` may return frames (a queued frame or a dirty document
        that is not held)."""
        conn = self._connections.get(conn_id)
        if conn is None:
            return False
        return bool(conn.outbox) or any(not self.is_held(d) for d in conn.dirty)

    def is_warm(self, conn_id: str) -> bool:
        """Whether the peer has sent a sync message about every document we sync with it:
        from then on our messages carry changes at once (before, they first learn what it
        holds)."""
        conn = self._connections.get(conn_id)
        return conn is not None and conn.is_warm()

    def is_syncing(self, document_id: str) -> bool:
        """Whether a sync of the document is in flight on some connection."""
        return any(conn.is_syncing(document_id) for conn in self._connections.values())

    def data_to_send(self, conn_id: str) -> list[bytes]:
        """Drain the connection: handshake, error and other queued frames, then one sync
        message per dirty document that is not held. Encoded, in sending order."""
        conn = self._connections.get(conn_id)
        if conn is None:
            return []
        frames, conn.outbox = conn.outbox, []
        if conn.state is ConnectionState.CONNECTED:
            frames.extend(self._sync_messages(conn))
        return frames

    # ---------------------------------------------------------------- receiving

    def receive(self, conn_id: str, data: bytes) -> list[Event]:
        """Process one frame from the peer; then call ``data_to_send`` for every connection
        (a received change may have to go on to the others once persisted)."""
        conn = self._connections.get(conn_id)
        if conn is None or conn.state is ConnectionState.CLOSED:
            return []
        try:
            message = decode(data, max_size=self._max_message_size)
            return self._dispatch(conn, message)
        except ProtocolError as exc:
            return [self._fail(conn, exc.message)]

    def _dispatch(self, conn: Connection, message: object) -> list[Event]:
        if isinstance(message, Ignored):
            return []
        if isinstance(message, Error):
            conn.state = ConnectionState.CLOSED
            return [ConnectionFailed(conn.conn_id, f"peer reported an error: {message.message}")]
        handler_name = _HANDLERS[conn.state].get(type(message))
        if handler_name is None:
            name = _WIRE_NAMES.get(type(message), type(message).__name__)
            raise ProtocolError(f"unexpected {name} message in state {conn.state.value}")
        handler: Callable[[Connection, Any], list[Event]] = getattr(self, handler_name)
        return handler(conn, message)

    def _on_join(self, conn: Connection, join: Join) -> list[Event]:
        if PROTOCOL_VERSION not in join.supported_protocol_versions:
            return [self._fail(conn, "unsupported protocol version")]
        conn.join = join
        conn.state = ConnectionState.AWAITING_ACCEPT
        return [JoinReceived(conn.conn_id, join)]

    def _on_peer(self, conn: Connection, peer: Peer) -> list[Event]:
        if peer.selected_protocol_version != PROTOCOL_VERSION:
            return [self._fail(conn, "unsupported protocol version")]
        try:
            info = self._peer_info_for(conn.conn_id, peer)
        except CrdtmdsError as exc:
            return [self._fail(conn, exc.message)]
        self._connect(conn, info)
        return [PeerConnected(conn.conn_id, info)]

    def _on_sync(self, conn: Connection, message: Request | Sync) -> list[Event]:
        peer = conn.peer_info
        document_id = message.document_id
        conn.check_document_count(document_id, self._max_documents)
        if not peer.may_read(document_id):
            conn.answer_unavailable(self.local_peer_id, document_id)
            return []
        if not peer.may_write and sync_message_has_changes(message.data):
            return [self._fail(conn, "changes refused: this peer may not write documents")]
        doc = self._store.get_document(document_id)
        if doc is None:
            doc = self._store.accept_document(document_id, peer)
        if doc is None or (isinstance(message, Request) and not doc.get_heads()):
            conn.answer_unavailable(self.local_peer_id, document_id)
            return []
        return self._apply_sync(conn, doc, document_id, message.data)

    def _apply_sync(
        self, conn: Connection, doc: Document, document_id: str, data: bytes
    ) -> list[Event]:
        link = conn.link(document_id)
        link.heard_from_peer = True
        before_heads = doc.get_heads()
        try:
            doc.receive_sync_message(link.sync_state, Message.decode(data))
        except BaseException as exc:
            if not is_core_error(exc):
                raise
            raise ProtocolError(f"invalid sync message for {document_id}: {exc}") from exc
        if link.note_peer_heads(data, doc.get_heads()):
            self._summaries.settled(conn, document_id, doc.get_heads())
        if sorted(doc.get_heads()) == sorted(before_heads):
            conn.dirty[document_id] = None
            return []
        fields = try_parse_sync_message(data)
        self._hold.hold(document_id, conn.conn_id)
        chunks = tuple(fields.changes) if fields is not None else ()
        return [DocumentChanged(conn.conn_id, document_id, before_heads, chunks)]

    def _on_doc_unavailable(self, conn: Connection, message: DocUnavailable) -> list[Event]:
        conn.check_document_count(message.document_id, self._max_documents)
        conn.link(message.document_id)
        return [DocumentUnavailableFromPeer(conn.conn_id, message.document_id)]

    def _on_ephemeral(self, conn: Connection, message: Ephemeral) -> list[Event]:
        if self._summaries.receive(conn, message):
            return []
        document_id = message.document_id
        conn.check_document_count(document_id, self._max_documents)
        if not conn.peer_info.may_read(document_id):
            return []
        conn.link(document_id)
        self._ephemeral.forward(message, conn, self._connections.values())
        return []

    # ---------------------------------------------------------------- internals

    def _connect(self, conn: Connection, peer: PeerInfo) -> None:
        conn.peer = peer
        conn.state = ConnectionState.CONNECTED
        summary = peer.is_server and self._summaries.start(conn)
        for document_id in self._store.shared_documents(peer):
            if summary and self._summaries.holds(document_id):
                continue  # domains wait for the summary's verdict
            if peer.may_read(document_id):
                conn.link(document_id)
                conn.dirty[document_id] = None

    def _fail(self, conn: Connection, message: str) -> ConnectionFailed:
        conn.close_with_error(message)
        return ConnectionFailed(conn.conn_id, message)

    def _sync_messages(self, conn: Connection) -> list[bytes]:
        return conn.sync_messages(
            self.is_held,
            self._store.get_document,
            local_peer_id=self.local_peer_id,
            max_frame_size=self._max_sync_message_size,
        )
