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
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from automerge.core import Document, Message, SyncState

from crdtmds.changes import change_hash_and_deps, encode_uleb128, read_uleb128, split_chunks
from crdtmds.errors import CrdtmdsError, ProtocolError, is_core_error
from crdtmds.protocol import (
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

__all__ = [
    "ConnectionFailed",
    "ConnectionState",
    "DocumentChanged",
    "DocumentStore",
    "DocumentUnavailableFromPeer",
    "Event",
    "Gossip",
    "JoinReceived",
    "PeerConnected",
    "PeerInfo",
    "default_peer_info",
    "split_sync_message",
    "sync_message_has_changes",
]

_EPHEMERAL_MEMORY = 4096
"""How many ephemeral message ids are remembered to stop them circling a mesh."""
MAX_DOCUMENTS_PER_CONNECTION_DEFAULT = 10_000
"""How many distinct documents one connection may involve (each costs a sync state)."""
MAX_SYNC_MESSAGE_SIZE_DEFAULT = 1024 * 1024
"""Bytes in one sync frame we send: the frame limit of stock automerge-repo clients (the
`websockets` default that Python's `automerge.repo` transport keeps)."""


# --------------------------------------------------------------------------- peers, store


def _read_anything(document_id: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the node decided about the peer at the other end of one connection."""

    peer_id: str
    metadata: dict[str, Any]
    may_write: bool
    """False for admin repo clients: a sync message of theirs that carries changes is
    refused with an error and the connection is closed."""
    may_read: Callable[[str], bool] = _read_anything
    """Which documents this peer may receive; others are answered with doc-unavailable."""
    is_server: bool = False
    """Servers are sent every document they may read; other peers only the documents
    they were announced at connect time or have asked about."""


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


def default_peer_info(peer: Peer) -> PeerInfo:
    """How a dialer sees the listener that answered its join, unless told otherwise.

    A listener is trusted to write and to read everything (we chose to dial it); it is a
    server when its metadata carries a ``role`` (servers announce "primary" or
    "secondary").
    """
    metadata = dict(peer.peer_metadata or {})
    return PeerInfo(
        peer_id=peer.sender_id,
        metadata=metadata,
        may_write=True,
        may_read=_read_anything,
        is_server="role" in metadata,
    )


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


class ConnectionState(enum.Enum):
    AWAITING_JOIN = "awaiting-join"  # listener: nothing received yet
    AWAITING_ACCEPT = "awaiting-accept"  # listener: join received, the caller decides
    AWAITING_PEER = "awaiting-peer"  # dialer: join sent
    CONNECTED = "connected"
    CLOSED = "closed"


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


@dataclass(slots=True)
class _DocLink:
    """The sync of one document over one connection."""

    sync_state: SyncState = field(default_factory=SyncState)
    heard_from_peer: bool = False
    requested_by_us: bool = False
    fresh: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(hash, chunk) of our own new changes that the next message must carry
    (`local_changes`)."""


@dataclass(slots=True)
class _Connection:
    conn_id: str
    dialer: bool
    local_metadata: dict[str, Any]
    state: ConnectionState
    peer: PeerInfo | None = None
    join: Join | None = None
    outbox: list[bytes] = field(default_factory=list)
    links: dict[str, _DocLink] = field(default_factory=dict)
    dirty: dict[str, None] = field(default_factory=dict)  # an ordered set

    def link(self, document_id: str) -> _DocLink:
        """The document's sync with this peer; having one means the peer follows it."""
        found = self.links.get(document_id)
        if found is None:
            found = self.links[document_id] = _DocLink()
        return found


# ----------------------------------------------------------------------------------- gossip


class Gossip:
    """Every peer connection of one node and their per-(peer, document) sync states.

    Rules:

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
       origin).
    4. A peer with ``may_write=False`` whose sync message carries changes is refused with
       an error ("changes refused: ...") and :class:`ConnectionFailed`; the changes never
       reach the live document (see :func:`sync_message_has_changes`).
    5. A peer never receives data of a document it may not read: its messages about one
       are answered with doc-unavailable. A message about a document we lack asks
       ``store.accept_document``; None, or a request we can only answer with an empty
       document, is answered with doc-unavailable, and the peer keeps following the
       document, so it is sent the document once ``document_changed`` or ``persisted``
       is called for it.
    6. Handshake: a dialer sends ``join`` with our metadata and waits for ``peer``, which
       yields :class:`PeerConnected` with the PeerInfo made by ``on_peer`` (default
       :func:`default_peer_info`; raising a CrdtmdsError there refuses the peer). A
       listener yields :class:`JoinReceived` and the caller must ``accept`` or ``reject``
       before any other message is processed; anything else first is a protocol error.
       A join that does not offer version "1" gets "unsupported protocol version" and the
       connection closes. Every malformed frame or message out of place gets an error
       and :class:`ConnectionFailed` for that connection alone; after an error, sent or
       received, everything from the peer is ignored.
    7. Ephemeral messages go on to every other connection whose peer may read and follows
       the document, each message once (remembered by sender, session and count), and
       never back to a mesh loop's origin (our own sender id); the message types listed
       as ignored by the protocol are dropped.
    8. Outgoing messages carry our ``local_peer_id`` as senderId and the peer's id as
       targetId (forwarded ephemeral messages keep their original sender).
    9. A peer that names a document beyond ``max_documents_per_connection`` distinct
       documents on one connection gets an error and the connection closes.
    10. No sync frame we send exceeds ``max_sync_message_size`` bytes, unless one change
        alone does: a larger sync message is sent as several, its changes shared out
        between them (see :func:`split_sync_message`).

    A peer "follows" a document when it was announced to it, it has sent a message about
    it, or we requested it from that peer. Servers are sent every document they may read
    whether they follow it or not.

    Misuse by the caller (an unknown conn_id, ``accept`` out of turn) raises KeyError or
    RuntimeError; ``receive`` and ``data_to_send`` on a forgotten connection return [].
    """

    def __init__(
        self,
        local_peer_id: str,
        store: DocumentStore,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE_DEFAULT,
        max_documents_per_connection: int = MAX_DOCUMENTS_PER_CONNECTION_DEFAULT,
        max_sync_message_size: int = MAX_SYNC_MESSAGE_SIZE_DEFAULT,
        on_peer: Callable[[str, Peer], PeerInfo] | None = None,
    ) -> None:
        self.local_peer_id = local_peer_id
        self._store = store
        self._max_message_size = max_message_size
        self._max_documents = max_documents_per_connection
        self._max_sync_message_size = max_sync_message_size
        self._peer_info_for = on_peer or (lambda _conn_id, peer: default_peer_info(peer))
        self._connections: dict[str, _Connection] = {}
        self._holds: dict[str, int] = {}
        self._sources: dict[str, set[str]] = {}
        """Per held document, the connections whose messages brought the changes."""
        self._relays: dict[str, set[str]] = {}
        """Per document, servers to send it to at ``release_relays``."""
        self._fresh: dict[str, list[tuple[bytes, bytes]]] = {}
        """Per document, the changes of `local_changes` for the next `document_changed`."""
        self._seen_ephemeral: OrderedDict[tuple[str, str, int], None] = OrderedDict()

    # ---------------------------------------------------------------- connections

    def open_connection(
        self, conn_id: str, *, dialer: bool, local_metadata: dict[str, Any]
    ) -> None:
        """Start tracking a new socket. A dialer queues its join: call ``data_to_send``."""
        if conn_id in self._connections:
            raise ValueError(f"connection {conn_id!r} is already open")
        state = ConnectionState.AWAITING_PEER if dialer else ConnectionState.AWAITING_JOIN
        conn = _Connection(conn_id, dialer, dict(local_metadata), state)
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
        self._relays.pop(document_id, None)
        fresh = self._fresh.pop(document_id, [])
        for conn in self._connections.values():
            if conn.state is ConnectionState.CONNECTED and self._should_sync(conn, document_id):
                conn.dirty[document_id] = None
                if fresh and self._peer_of(conn).is_server:
                    conn.link(document_id).fresh.extend(fresh)

    def persisted(self, document_id: str, *, relay_later: bool = False) -> None:
        """The changes of one :class:`DocumentChanged` are on disk.

        When every such event of the document is persisted, it is dirty for every peer.
        With `relay_later` (the node has a live link to every server of its cluster, so
        changes from a server most likely reached the others straight from their origin),
        changes that came from servers only go to the other servers at the next
        ``release_relays``. Changes from repo clients never wait.
        """
        holds = self._holds.get(document_id, 0)
        if holds == 0:
            raise RuntimeError(f"persisted({document_id!r}) without a pending DocumentChanged")
        if holds > 1:
            self._holds[document_id] = holds - 1
            return
        del self._holds[document_id]
        sources = self._sources.pop(document_id, set())
        if not relay_later or not all(self._from_server(c) for c in sources):
            self.document_changed(document_id)
            return
        # The senders hear our new heads now (so they stop offering the changes); other
        # servers get them at the next release, along with whatever else came by then.
        for conn in self._connections.values():
            if conn.state is ConnectionState.CONNECTED and self._should_sync(conn, document_id):
                if conn.conn_id in sources or not self._peer_of(conn).is_server:
                    conn.dirty[document_id] = None
                else:
                    self._relays.setdefault(document_id, set()).add(conn.conn_id)

    def relays_pending(self) -> bool:
        """Whether changes wait for ``release_relays`` (see ``persisted``)."""
        return bool(self._relays)

    def release_relays(self) -> None:
        """Mark every waiting relay dirty; call ``data_to_send`` for every connection."""
        relays, self._relays = self._relays, {}
        for document_id, conn_ids in relays.items():
            for conn_id in conn_ids:
                conn = self._connections.get(conn_id)
                if conn is not None and conn.state is ConnectionState.CONNECTED:
                    conn.dirty[document_id] = None

    def has_data_to_send(self, conn_id: str) -> bool:
        """Whether ``data_to_send`` may return frames (a queued frame or a dirty document
        that is not held)."""
        conn = self._connections.get(conn_id)
        if conn is None:
            return False
        return bool(conn.outbox) or any(d not in self._holds for d in conn.dirty)

    def is_warm(self, conn_id: str) -> bool:
        """Whether the peer has sent a sync message about every document we sync with it:
        from then on our messages carry changes at once (before, they first learn what it
        holds)."""
        conn = self._connections.get(conn_id)
        return (
            conn is not None
            and conn.state is ConnectionState.CONNECTED
            and all(link.heard_from_peer for link in conn.links.values())
        )

    def _from_server(self, conn_id: str) -> bool:
        conn = self._connections.get(conn_id)
        return conn is not None and conn.peer is not None and conn.peer.is_server

    def is_held(self, document_id: str) -> bool:
        return document_id in self._holds

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

    def _dispatch(self, conn: _Connection, message: object) -> list[Event]:
        if isinstance(message, Ignored):
            return []
        if isinstance(message, Error):
            conn.state = ConnectionState.CLOSED
            return [ConnectionFailed(conn.conn_id, f"peer reported an error: {message.message}")]
        handler_name = _HANDLERS[conn.state].get(type(message))
        if handler_name is None:
            name = _WIRE_NAMES.get(type(message), type(message).__name__)
            raise ProtocolError(f"unexpected {name} message in state {conn.state.value}")
        handler: Callable[[_Connection, Any], list[Event]] = getattr(self, handler_name)
        return handler(conn, message)

    def _on_join(self, conn: _Connection, join: Join) -> list[Event]:
        if PROTOCOL_VERSION not in join.supported_protocol_versions:
            return [self._fail(conn, "unsupported protocol version")]
        conn.join = join
        conn.state = ConnectionState.AWAITING_ACCEPT
        return [JoinReceived(conn.conn_id, join)]

    def _on_peer(self, conn: _Connection, peer: Peer) -> list[Event]:
        if peer.selected_protocol_version != PROTOCOL_VERSION:
            return [self._fail(conn, "unsupported protocol version")]
        try:
            info = self._peer_info_for(conn.conn_id, peer)
        except CrdtmdsError as exc:
            return [self._fail(conn, exc.message)]
        self._connect(conn, info)
        return [PeerConnected(conn.conn_id, info)]

    def _on_sync(self, conn: _Connection, message: Request | Sync) -> list[Event]:
        peer = self._peer_of(conn)
        document_id = message.document_id
        self._check_document_count(conn, document_id)
        if not peer.may_read(document_id):
            self._answer_unavailable(conn, document_id)
            return []
        if not peer.may_write and sync_message_has_changes(message.data):
            return [self._fail(conn, "changes refused: this peer may not write documents")]
        doc = self._store.get_document(document_id)
        if doc is None:
            doc = self._store.accept_document(document_id, peer)
        if doc is None or (isinstance(message, Request) and not doc.get_heads()):
            self._answer_unavailable(conn, document_id)
            return []
        return self._apply_sync(conn, doc, document_id, message.data)

    def _apply_sync(
        self, conn: _Connection, doc: Document, document_id: str, data: bytes
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
        if sorted(doc.get_heads()) == sorted(before_heads):
            conn.dirty[document_id] = None
            return []
        fields = _parsed_or_none(data)
        self._holds[document_id] = self._holds.get(document_id, 0) + 1
        self._sources.setdefault(document_id, set()).add(conn.conn_id)
        chunks = tuple(fields.changes) if fields is not None else ()
        return [DocumentChanged(conn.conn_id, document_id, before_heads, chunks)]

    def _on_doc_unavailable(self, conn: _Connection, message: DocUnavailable) -> list[Event]:
        self._check_document_count(conn, message.document_id)
        conn.link(message.document_id)
        return [DocumentUnavailableFromPeer(conn.conn_id, message.document_id)]

    def _on_ephemeral(self, conn: _Connection, message: Ephemeral) -> list[Event]:
        document_id = message.document_id
        self._check_document_count(conn, document_id)
        if not self._peer_of(conn).may_read(document_id):
            return []
        conn.link(document_id)
        if message.sender_id == self.local_peer_id or not self._first_sight_of_ephemeral(message):
            return []  # our own, come back around a loop, or seen before
        for other in self._connections.values():
            if (
                other is not conn
                and other.state is ConnectionState.CONNECTED
                and self._should_sync(other, document_id)
            ):
                forwarded = Ephemeral(
                    sender_id=message.sender_id,
                    target_id=self._peer_of(other).peer_id,
                    document_id=document_id,
                    count=message.count,
                    session_id=message.session_id,
                    data=message.data,
                )
                other.outbox.append(encode(forwarded))
        return []

    # ---------------------------------------------------------------- internals

    def _check_document_count(self, conn: _Connection, document_id: str) -> None:
        if document_id not in conn.links and len(conn.links) >= self._max_documents:
            raise ProtocolError(
                f"too many documents on one connection (the limit is {self._max_documents})"
            )

    def _connect(self, conn: _Connection, peer: PeerInfo) -> None:
        conn.peer = peer
        conn.state = ConnectionState.CONNECTED
        for document_id in self._store.shared_documents(peer):
            if peer.may_read(document_id):
                conn.link(document_id)
                conn.dirty[document_id] = None

    def _fail(self, conn: _Connection, message: str) -> ConnectionFailed:
        conn.outbox.append(encode(Error(message=message)))
        conn.state = ConnectionState.CLOSED
        conn.dirty.clear()
        return ConnectionFailed(conn.conn_id, message)

    @staticmethod
    def _peer_of(conn: _Connection) -> PeerInfo:
        assert conn.peer is not None, "a connected connection always has its PeerInfo"
        return conn.peer

    def _should_sync(self, conn: _Connection, document_id: str) -> bool:
        peer = self._peer_of(conn)
        if not peer.may_read(document_id):
            return False
        return peer.is_server or document_id in conn.links

    def _answer_unavailable(self, conn: _Connection, document_id: str) -> None:
        conn.link(document_id)
        reply = DocUnavailable(
            sender_id=self.local_peer_id,
            target_id=self._peer_of(conn).peer_id,
            document_id=document_id,
        )
        conn.outbox.append(encode(reply))

    def _first_sight_of_ephemeral(self, message: Ephemeral) -> bool:
        key = (message.sender_id, message.session_id, message.count)
        if key in self._seen_ephemeral:
            return False
        self._seen_ephemeral[key] = None
        if len(self._seen_ephemeral) > _EPHEMERAL_MEMORY:
            self._seen_ephemeral.popitem(last=False)
        return True

    def _sync_messages(self, conn: _Connection) -> list[bytes]:
        frames: list[bytes] = []
        for document_id in list(conn.dirty):
            if document_id in self._holds:
                continue  # stays dirty until persisted
            del conn.dirty[document_id]
            frames.extend(self._sync_message(conn, document_id))
        return frames

    def _sync_message(self, conn: _Connection, document_id: str) -> list[bytes]:
        """The frames of one sync message about the document (none when there is nothing
        to say, several when it is larger than the sync frame limit)."""
        peer = self._peer_of(conn)
        if not peer.may_read(document_id):
            return []
        link = conn.link(document_id)
        doc = self._store.get_document(document_id)
        if doc is None:
            if not link.requested_by_us:
                return []
            doc = Document()  # an empty stand-in: a request says "I have nothing"
        message = doc.generate_sync_message(link.sync_state)
        fresh, link.fresh = link.fresh, []
        if message is None:
            return []
        kind = Sync if link.heard_from_peer or doc.get_heads() else Request

        def frame(data: bytes) -> bytes:
            return encode(kind(self.local_peer_id, peer.peer_id, document_id, data))

        data = with_changes(message.encode(), fresh)
        whole = frame(data)
        if len(whole) <= self._max_sync_message_size:
            return [whole]
        envelope = len(whole) - len(data) + _COUNT_MARGIN  # the CBOR around the data
        parts = split_sync_message(
            data,
            self._max_sync_message_size - envelope,
            lambda: [change.bytes for change in doc.get_changes([])],
        )
        return [frame(part) for part in parts]


# ---------------------------------------------------------------- automerge sync messages

SYNC_MESSAGE_V1 = 0x42
SYNC_MESSAGE_V2 = 0x43
_HASH_SIZE = 32
_CHUNK_TYPE_OFFSET = 8
"""Where a chunk's type byte is: after the magic bytes and the checksum."""
_CHUNK_DOCUMENT = 0
_COUNT_MARGIN = 8


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """The fields of one Automerge sync message, its changes left as chunk bytes.

    The layout (automerge ``sync.rs``)::

        type byte          0x42 (v1) or 0x43 (v2)
        heads              uleb128 count, 32-byte hashes
        need               uleb128 count, 32-byte hashes
        have               uleb128 count of (last_sync hashes, uleb128-prefixed bloom filter)
        changes            uleb128 count of uleb128-prefixed chunks (v2: one whole document)
        capabilities       optional: uleb128 count of one-byte capabilities
    """

    heads: list[bytes]
    need: list[bytes]
    have: list[tuple[list[bytes], bytes]]
    """(last-sync hashes, encoded bloom filter) pairs."""
    changes: list[bytes]
    """The entries of the change list, each one or more chunks."""
    capabilities: bytes | None = None


def parse_sync_message(data: bytes, *, exact: bool = False) -> SyncMessage:
    """The fields of an encoded sync message; ProtocolError when ``data`` is not one.

    Bytes after the capabilities are ignored, as Automerge ignores them, unless
    ``exact``.
    """
    reader = _SyncMessageReader(data)
    heads = reader.heads()
    need = reader.hashes()
    have = [(reader.hashes(), reader.length_prefixed_bytes()) for _ in range(reader.count(2))]
    changes = [reader.length_prefixed_bytes() for _ in range(reader.count(1))]
    capabilities = reader.take(reader.count(1)) if reader.remaining else None
    if exact and reader.remaining:
        raise ProtocolError("sync message: trailing bytes after the capabilities")
    return SyncMessage(heads, need, have, changes, capabilities)


def _parsed_or_none(data: bytes) -> SyncMessage | None:
    # Automerge accepted the message; a form this reader does not know only means the
    # node asks the document for the changes instead.
    try:
        return parse_sync_message(data)
    except ProtocolError:
        return None


def with_changes(data: bytes, changes: list[tuple[bytes, bytes]]) -> bytes:
    """The sync message `data` with those of `changes` ((hash, chunk) pairs) added that it
    does not carry yet. Left as it is when it carries them all already, or when it
    carries a whole document (which may hold them)."""
    if not changes:
        return data
    message = parse_sync_message(data)
    try:
        carried = {
            change_hash_and_deps(chunk)[0]
            for entry in message.changes
            for chunk in split_chunks(entry)
        }
    except (ProtocolError, ValueError):
        return data
    missing = [chunk for change_hash, chunk in changes if change_hash not in carried]
    if not missing:
        return data
    return encode_sync_message(replace(message, changes=[*message.changes, *missing]), data[0])


def split_sync_message(
    data: bytes, budget: int, document_changes: Callable[[], list[bytes]]
) -> list[bytes]:
    """`data`, an encoded sync message, as sync messages of at most `budget` bytes each.

    Each part has the message's heads, needs and Bloom filters and a share of its
    changes, in their order: a receiver applies the changes of each part as it comes
    (queuing any whose dependencies are still on the way), as it would one message. A
    whole document, which Automerge sends a peer that holds nothing, cannot be cut: its
    change chunks (`document_changes()`) are sent instead. A single change larger than the
    budget goes alone in its part. `data` is returned as it is when it fits, or when it is
    not a message this reader understands.
    """
    if len(data) <= budget:
        return [data]
    try:
        message = parse_sync_message(data)
        chunks = _change_chunks(message.changes, document_changes)
    except (ProtocolError, ValueError):
        return [data]
    # Every part costs the message without its changes, plus a change count of up to
    # a few bytes, plus its chunks with their length prefixes.
    fixed = len(encode_sync_message(replace(message, changes=[]))) + _COUNT_MARGIN
    parts: list[list[bytes]] = [[]]
    size = fixed
    for chunk in chunks:
        cost = len(chunk) + len(encode_uleb128(len(chunk)))
        if parts[-1] and size + cost > budget:
            parts.append([])
            size = fixed
        parts[-1].append(chunk)
        size += cost
    return [encode_sync_message(replace(message, changes=part)) for part in parts]


def _change_chunks(
    entries: list[bytes], document_changes: Callable[[], list[bytes]]
) -> list[bytes]:
    """The change chunks a message's change entries stand for, in order."""
    chunks = [chunk for entry in entries for chunk in split_chunks(entry)]
    if any(chunk[_CHUNK_TYPE_OFFSET] == _CHUNK_DOCUMENT for chunk in chunks):
        return document_changes()
    return chunks


def encode_sync_message(message: SyncMessage, kind: int = SYNC_MESSAGE_V1) -> bytes:
    """The bytes of a sync message (the inverse of `parse_sync_message`)."""
    out = bytearray([kind])
    _put_hashes(out, message.heads)
    _put_hashes(out, message.need)
    out += encode_uleb128(len(message.have))
    for last_sync, bloom in message.have:
        _put_hashes(out, last_sync)
        _put_bytes(out, bloom)
    out += encode_uleb128(len(message.changes))
    for change in message.changes:
        _put_bytes(out, change)
    if message.capabilities is not None:
        _put_bytes(out, message.capabilities)
    return bytes(out)


def _put_hashes(out: bytearray, hashes: list[bytes]) -> None:
    out += encode_uleb128(len(hashes))
    for change_hash in hashes:
        out += change_hash


def _put_bytes(out: bytearray, data: bytes) -> None:
    out += encode_uleb128(len(data))
    out += data


def sync_message_heads(data: bytes) -> list[bytes]:
    """The sender's heads, which open a sync message; ProtocolError if they cannot be read
    (the rest of the message is not looked at)."""
    return _SyncMessageReader(data).heads()


def sync_message_has_changes(data: bytes) -> bool:
    """Whether an encoded Automerge sync message carries changes, without applying it.
    Raises ProtocolError when ``data`` is not such a message."""
    return bool(parse_sync_message(data).changes)


class _SyncMessageReader:
    """Reads the fields of an Automerge sync message, checking every length against the
    input left."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def heads(self) -> list[bytes]:
        """The type byte, then the heads."""
        kind = self.take(1)[0]
        if kind not in (SYNC_MESSAGE_V1, SYNC_MESSAGE_V2):
            raise ProtocolError(f"sync message: unknown type byte 0x{kind:02x}")
        return self.hashes()

    def uleb128(self) -> int:
        try:
            value, self._pos = read_uleb128(self._data, self._pos)
        except ValueError as exc:
            raise ProtocolError(f"sync message: {exc}") from None
        return value

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise ProtocolError("sync message: not enough input")
        self._pos += size
        return self._data[self._pos - size : self._pos]

    def count(self, min_item_size: int) -> int:
        """A length prefix, checked against the input left so that it cannot lie."""
        count = self.uleb128()
        if count * min_item_size > self.remaining:
            raise ProtocolError("sync message: not enough input")
        return count

    def hashes(self) -> list[bytes]:
        return [self.take(_HASH_SIZE) for _ in range(self.count(_HASH_SIZE))]

    def length_prefixed_bytes(self) -> bytes:
        return self.take(self.uleb128())
