"""A fake network of Gossip hubs for tests: no sockets, no asyncio, deterministic."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from automerge.core import ROOT, Document, ScalarType, extract

from crdtmds.sync.gossip import (
    ConnectionFailed,
    DocumentChanged,
    Event,
    Gossip,
    JoinReceived,
)
from crdtmds.sync.peers import PeerInfo
from crdtmds.sync.protocol import Join, Message, decode, new_document_id

SERVER_METADATA: dict[str, Any] = {"role": "secondary"}


class MemoryStore:
    """Live documents in a dict; takes any document a peer offers unless told not to."""

    def __init__(self, *, accept: bool = True) -> None:
        self.docs: dict[str, Document] = {}
        self.accept = accept
        self.accept_calls: list[tuple[str, str]] = []

    def get_document(self, document_id: str) -> Document | None:
        return self.docs.get(document_id)

    def accept_document(self, document_id: str, peer: PeerInfo) -> Document | None:
        self.accept_calls.append((document_id, peer.peer_id))
        if not self.accept:
            return None
        doc = self.docs[document_id] = Document()
        return doc

    def shared_documents(self, peer: PeerInfo) -> Iterable[str]:
        return list(self.docs)


def server_peer(join: Join) -> PeerInfo:
    return PeerInfo(
        peer_id=join.sender_id,
        metadata=dict(join.peer_metadata or {}),
        may_write=True,
        is_server=True,
    )


class Hub:
    """One node: its Gossip, its store, and what it persisted."""

    def __init__(
        self,
        name: str,
        *,
        auto_persist: bool = True,
        accept: bool = True,
        admit: Callable[[Join], PeerInfo] = server_peer,
        **gossip_options: Any,
    ) -> None:
        self.name = name
        self.store = MemoryStore(accept=accept)
        self.gossip = Gossip(name, self.store, **gossip_options)
        self.auto_persist = auto_persist
        self.admit = admit
        self.events: list[Event] = []
        self.pending: list[DocumentChanged] = []
        self.persisted_hashes: dict[str, list[bytes]] = {}
        self.relay_later = False
        """Passed to every `Gossip.persisted`, as a node linked to every server does."""

    def __repr__(self) -> str:
        return f"Hub({self.name!r})"

    def handle(self, events: list[Event]) -> None:
        """What a node does with events: admit joiners, persist received changes."""
        for event in events:
            self.events.append(event)
            if isinstance(event, JoinReceived):
                self.gossip.accept(event.conn_id, self.admit(event.join), SERVER_METADATA)
            elif isinstance(event, DocumentChanged):
                self.pending.append(event)
        if self.auto_persist:
            self.persist_all()

    def persist_all(self) -> None:
        pending, self.pending = self.pending, []
        for event in pending:
            doc = self.store.docs[event.document_id]
            changes = doc.get_changes(event.before_heads)
            self.persisted_hashes.setdefault(event.document_id, []).extend(
                change.hash for change in changes
            )
            self.gossip.persisted(event.document_id, relay_later=self.relay_later)

    def create(self, **values: str) -> str:
        document_id = new_document_id()
        self.store.docs[document_id] = Document()
        if values:
            self.publish(document_id, **values)
        return document_id

    def edit(self, document_id: str, **values: str) -> None:
        doc = self.store.docs[document_id]
        with doc.transaction() as tx:
            for key, value in values.items():
                tx.put(ROOT, key, ScalarType.Str, value)

    def publish(self, document_id: str, **values: str) -> None:
        self.edit(document_id, **values)
        self.gossip.document_changed(document_id)

    def read(self, document_id: str) -> dict[str, Any] | None:
        doc = self.store.docs.get(document_id)
        return None if doc is None else extract(doc, ROOT)

    def heads(self, document_id: str) -> list[bytes]:
        return sorted(self.store.docs[document_id].get_heads())

    def failures(self) -> list[ConnectionFailed]:
        return [e for e in self.events if isinstance(e, ConnectionFailed)]


@dataclass
class Frame:
    source: Hub
    target: Hub
    data: bytes

    @property
    def message(self) -> Message:
        return decode(self.data)


@dataclass
class Network:
    """Joins hubs pairwise, like h11's ConnectionPair, and carries their frames."""

    routes: dict[tuple[int, str], tuple[Hub, str]] = field(default_factory=dict)
    log: list[Frame] = field(default_factory=list)
    hubs: dict[int, Hub] = field(default_factory=dict)

    def connect(self, dialer: Hub, listener: Hub) -> tuple[str, str]:
        """Open a connection; returns (dialer's conn id, listener's conn id)."""
        dialer_conn, listener_conn = f"to-{listener.name}", f"from-{dialer.name}"
        dialer.gossip.open_connection(dialer_conn, dialer=True, local_metadata=SERVER_METADATA)
        listener.gossip.open_connection(listener_conn, dialer=False, local_metadata={})
        self.routes[(id(dialer), dialer_conn)] = (listener, listener_conn)
        self.routes[(id(listener), listener_conn)] = (dialer, dialer_conn)
        self.hubs[id(dialer)] = dialer
        self.hubs[id(listener)] = listener
        return dialer_conn, listener_conn

    def disconnect(self, hub: Hub, conn_id: str) -> None:
        """Both ends see the socket close."""
        other, other_conn = self.routes.pop((id(hub), conn_id))
        self.routes.pop((id(other), other_conn), None)
        hub.gossip.close_connection(conn_id)
        other.gossip.close_connection(other_conn)

    def deliver(self, target: Hub, conn_id: str, data: bytes) -> list[Event]:
        events = target.gossip.receive(conn_id, data)
        target.handle(events)
        return events

    def step(self) -> int:
        """Drain every connection once and deliver what it sends; returns frames moved."""
        moved = 0
        for (hub_key, conn_id), (target, target_conn) in list(self.routes.items()):
            if (hub_key, conn_id) not in self.routes:
                continue  # closed earlier in this step
            source = self.hubs[hub_key]
            for data in source.gossip.data_to_send(conn_id):
                self.log.append(Frame(source, target, data))
                self.deliver(target, target_conn, data)
                moved += 1
            if source.gossip.is_closed(conn_id):
                self.disconnect(source, conn_id)
        return moved

    def pump(self, max_steps: int = 200) -> int:
        """Step until nothing moves; returns the frames moved."""
        total = 0
        for _ in range(max_steps):
            moved = self.step()
            if not moved:
                return total
            total += moved
        raise AssertionError(f"the network did not settle in {max_steps} steps")

    def messages(self, source: Hub | None = None, target: Hub | None = None) -> list[Message]:
        return [
            frame.message
            for frame in self.log
            if (source is None or frame.source is source)
            and (target is None or frame.target is target)
        ]
