"""The heads summary between two servers (no sockets: the fake network of
tests/helpers/gossip.py): idle documents are neither read nor sent on a reconnect, the
bytes of a reconnect follow the changes, and a peer that lost data or lacks the
capability gets the plain anti-entropy round."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from automerge.core import Document

from crdtmds.sync.heads_summary import CAPABILITY
from crdtmds.sync.peers import PeerInfo
from crdtmds.sync.protocol import Ephemeral, Request, Sync, new_document_id
from crdtmds.sync.summary_exchange import SummaryExchanges
from tests.helpers import gossip as fake
from tests.helpers.gossip import Hub, Network

CARRIER = new_document_id()
"""The cluster document's stand-in: the summary's messages are about it."""


class MemoryHeads:
    """A `HeadsSource` over a hub's store: every document but the carrier is a domain."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.records: dict[str, dict[str, list[bytes]]] = {}

    def domain_ids(self) -> Iterable[str]:
        return [d for d in self.hub.store.docs if d != CARRIER]

    def holds(self, document_id: str) -> bool:
        return document_id != CARRIER and document_id in self.hub.store.docs

    def heads_of(self, document_id: str) -> list[bytes] | None:
        doc = self.hub.store.docs.get(document_id)
        return doc.get_heads() if doc is not None else None

    def agreed(self, peer_key: str) -> Mapping[str, list[bytes]]:
        return self.records.get(peer_key, {})

    def record_agreed(self, peer_key: str, document_id: str, heads: list[bytes]) -> None:
        self.records.setdefault(peer_key, {})[document_id] = list(heads)


class CountingStore(fake.MemoryStore):
    """Counts the documents the hub reads (a lazy server would load each)."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get_document(self, document_id: str) -> Document | None:
        self.read.add(document_id)
        return super().get_document(document_id)


def summary_hub(name: str, *, offer: bool = True) -> tuple[Hub, MemoryHeads]:
    hub = Hub(name)
    hub.store = CountingStore()
    heads = MemoryHeads(hub)
    summaries = SummaryExchanges(heads, name, CARRIER) if offer else None
    hub.gossip = fake.Gossip(name, hub.store, summaries=summaries)
    hub.store.docs[CARRIER] = Document()
    return hub, heads


@pytest.fixture(autouse=True)
def servers_offer_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    metadata: dict[str, Any] = {**fake.SERVER_METADATA, CAPABILITY: 1, "server-id": "peer"}
    monkeypatch.setattr(fake, "SERVER_METADATA", metadata)

    def server_peer(join: Any) -> PeerInfo:
        return PeerInfo(join.sender_id, dict(join.peer_metadata or {}), True, is_server=True)

    monkeypatch.setattr(fake, "server_peer", server_peer)


def synced_pair(domains: int) -> tuple[Hub, Hub, MemoryHeads, MemoryHeads, list[str]]:
    a, a_heads = summary_hub("a")
    b, b_heads = summary_hub("b")
    ids = [a.create(value=f"v{i}") for i in range(domains)]
    network = Network()
    network.connect(a, b)
    network.pump()
    for document_id in ids:
        assert b.heads(document_id) == a.heads(document_id)
    network.disconnect(a, "to-b")
    return a, b, a_heads, b_heads, ids


def reconnect(a: Hub, b: Hub) -> Network:
    a.store.read.clear()  # type: ignore[attr-defined]
    b.store.read.clear()  # type: ignore[attr-defined]
    network = Network()
    network.connect(a, b)
    network.pump()
    return network


def about(network: Network, document_id: str) -> list[bytes]:
    return [
        f.data
        for f in network.log
        if isinstance(f.message, Sync | Request) and f.message.document_id == document_id
    ]


def test_after_a_reconnect_only_the_changed_document_is_read_or_sent() -> None:
    a, b, _, _, ids = synced_pair(5)
    a.edit(ids[0], value="changed while apart")
    network = reconnect(a, b)
    assert b.read(ids[0]) == a.read(ids[0])
    for idle in ids[1:]:
        assert about(network, idle) == []
        assert idle not in a.store.read and idle not in b.store.read  # type: ignore[attr-defined]
    summaries = [f for f in network.log if isinstance(f.message, Ephemeral)]
    assert len(summaries) == 4  # a list and a digest each way, never forwarded


def test_the_bytes_of_a_reconnect_follow_the_missing_changes() -> None:
    a, b, _, _, ids = synced_pair(1)
    big = ids[0]
    for index in range(6000):  # a long history: the plain round sends 8.5x the changes
        a.edit(big, **{f"k{index % 300}": f"v{index}"})
    reconnect(a, b).disconnect(a, "to-b")
    before = a.store.docs[big].get_heads()
    for index in range(10):
        a.edit(big, **{f"k{index}": f"late {index}"})
    missing = sum(len(c.bytes) for c in a.store.docs[big].get_changes(before))
    network = reconnect(a, b)
    assert b.heads(big) == a.heads(big)
    assert sum(len(frame) for frame in about(network, big)) <= 5 * missing


def test_a_peer_restored_from_a_backup_is_synced_in_full() -> None:
    a, b, _, b_heads, ids = synced_pair(3)
    restored = ids[1]
    old = b.store.docs[restored].fork()
    a.edit(restored, value="newer")
    network = reconnect(a, b)  # b gets the newer change and agrees on it
    network.disconnect(a, "to-b")
    b.store.docs[restored] = old  # then b's disk goes back in time, records and all
    b_heads.records["peer"][restored] = old.get_heads()
    reconnect(a, b)
    assert b.read(restored) == a.read(restored)


def test_a_peer_without_the_capability_gets_every_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fake, "SERVER_METADATA", {"role": "secondary"})  # nothing offered
    a, _ = summary_hub("a")
    b, _ = summary_hub("b", offer=False)
    ids = [a.create(value=f"v{i}") for i in range(3)]
    network = Network()
    network.connect(a, b)
    network.pump()
    assert all(b.read(d) == a.read(d) for d in ids)
    assert not [f for f in network.log if isinstance(f.message, Ephemeral)]
