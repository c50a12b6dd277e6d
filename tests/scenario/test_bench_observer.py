"""The benchmarks' change-graph observer (bench/lib: sync_codec, change_graph, observers):
sync message fields, change hashes and dependencies, heads, and the sync protocol against
Automerge's own.

Most tests need no network: an `automerge.core.Document` with a `SyncState` plays the
server. One test observes a real crdtmds node on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from lib import change_graph, credentials, observers, sync_codec

from crdtmds.sync.sync_message import SYNC_MESSAGE_V1, SYNC_MESSAGE_V2

pytestmark = pytest.mark.timeout(30)


def add_host(doc: Document, index: int) -> None:
    with doc.transaction() as tx:
        host = tx.put_object(ROOT, f"host-{index}", ObjType.Map)
        tx.put(host, "name", ScalarType.Str, f"host-{index}")
        tx.put(host, "ipv4-address", ScalarType.Str, f"10.0.0.{index}")


def document_with_hosts(count: int) -> Document:
    doc = Document()
    for index in range(count):
        add_host(doc, index)
    return doc


def deflated(raw: bytes) -> bytes:
    """A plain change chunk rewritten as a deflated one (type 2), checksum kept."""
    from crdtmds.core.changes import encode_uleb128, read_uleb128

    length, start = read_uleb128(raw, 9)
    assert raw[8] == 1 and len(raw) - start == length
    squeezer = zlib.compressobj(wbits=-15)
    body = squeezer.compress(raw[start:]) + squeezer.flush()
    return raw[:8] + b"\x02" + encode_uleb128(len(body)) + body


# ---------------------------------------------------------------- change chunks


def test_change_hash_and_deps_match_the_automerge_change() -> None:
    doc = document_with_hosts(3)
    with doc.transaction() as tx:  # a second actor's concurrent change makes two heads
        tx.put(ROOT, "note", ScalarType.Str, "x")
    for change in doc.get_changes([]):
        assert sync_codec.change_hash_and_deps(change.raw_bytes) == (
            change.hash,
            tuple(change.deps),
        )


def test_a_deflated_change_has_the_hash_of_its_uncompressed_form() -> None:
    doc = Document()
    with doc.transaction() as tx:
        for index in range(200):
            tx.put(ROOT, f"key-{index}", ScalarType.Str, "value " * 20)
    (change,) = doc.get_changes([])
    assert change.bytes[8] == 2  # the package itself deflates a change this large
    assert sync_codec.change_hash_and_deps(change.bytes) == (change.hash, ())
    small = document_with_hosts(2).get_changes([])[1]
    assert sync_codec.change_hash_and_deps(deflated(small.raw_bytes)) == (
        small.hash,
        (small.deps[0],),
    )


def test_a_corrupt_change_chunk_is_refused() -> None:
    raw = bytearray(document_with_hosts(1).get_changes([])[0].raw_bytes)
    raw[-1] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        sync_codec.change_hash_and_deps(bytes(raw))


# ---------------------------------------------------------------- sync messages


def test_parse_reads_a_v1_message_with_its_changes() -> None:
    doc = document_with_hosts(3)
    state = SyncState()
    doc.receive_sync_message(state, Message.decode(sync_codec.encode_sync_message([], [], [[]])))
    data = doc.generate_sync_message(state).encode()
    assert data[0] == SYNC_MESSAGE_V1
    message = sync_codec.parse_sync_message(data)
    assert message.heads == doc.get_heads()
    assert message.need == []
    changes = doc.get_changes([])
    assert message.changes == [change.raw_bytes for change in changes]
    assert sync_codec.sync_message_changes(message) == [(c.hash, tuple(c.deps)) for c in changes]


def test_a_v2_whole_document_yields_every_change() -> None:
    doc = document_with_hosts(4)
    state = SyncState()
    asking = Document().generate_sync_message(SyncState())  # advertises v2
    doc.receive_sync_message(state, asking)
    data = doc.generate_sync_message(state).encode()
    assert data[0] == SYNC_MESSAGE_V2
    message = sync_codec.parse_sync_message(data)
    assert message.capabilities == b"\x01\x02"
    assert [chunk[8] for chunk in message.changes] == [0]  # one document chunk
    found = sync_codec.sync_message_changes(message)
    assert found == [(c.hash, tuple(c.deps)) for c in doc.get_changes([])]


def test_concatenated_chunks_in_one_entry_are_all_read() -> None:
    changes = document_with_hosts(3).get_changes([])
    joined = b"".join(change.raw_bytes for change in changes)
    message = sync_codec.SyncMessage([], [], [], [joined])
    assert [h for h, _ in sync_codec.sync_message_changes(message)] == [c.hash for c in changes]


def test_encoded_message_is_what_automerge_reads() -> None:
    heads = sorted(document_with_hosts(2).get_heads() + document_with_hosts(3).get_heads())
    data = sync_codec.encode_sync_message(heads, [heads[0]], [heads])
    assert sync_codec.parse_sync_message(data) == sync_codec.SyncMessage(
        heads, [heads[0]], [(heads, b"")], [], None
    )
    decoded = Message.decode(data)  # the core accepts it
    assert decoded.encode() == data


def test_encoded_changes_are_applied_by_automerge() -> None:
    changes = document_with_hosts(3).get_changes([])
    chunks = [change.bytes for change in changes]
    heads = [changes[-1].hash]
    data = sync_codec.encode_sync_message(heads, [], [heads], chunks)
    assert sync_codec.parse_sync_message(data) == sync_codec.SyncMessage(
        heads, [], [(heads, b"")], chunks, None
    )
    receiver = Document()
    receiver.receive_sync_message(SyncState(), Message.decode(data))
    assert receiver.get_heads() == heads
    assert [c.hash for c in receiver.get_changes([])] == [c.hash for c in changes]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x41\x00\x00\x00\x00", b"\x42\x01" + b"\x00" * 31, b"\x42\x00\x00\x00\x01\x05"],
)
def test_malformed_messages_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        sync_codec.parse_sync_message(data)


# ---------------------------------------------------------------- the graph


def test_heads_are_the_held_changes_nothing_depends_on() -> None:
    base = document_with_hosts(2)
    left, right = base.fork(), base.fork()
    add_host(left, 10)
    add_host(right, 11)
    base.merge(left)
    base.merge(right)
    graph = change_graph.ChangeGraph()
    for change in base.get_changes([]):
        assert graph.add(change.hash, change.deps, 1.0) == [change.hash]
    assert graph.heads == set(base.get_heads())
    assert len(graph.heads) == 2
    assert set(graph.arrived) == {c.hash for c in base.get_changes([])}


def test_a_change_waits_for_its_dependencies() -> None:
    changes = document_with_hosts(3).get_changes([])
    first, second, third = ((c.hash, c.deps) for c in changes)
    graph = change_graph.ChangeGraph()
    assert graph.add(*third, 1.0) == []
    assert graph.missing() == [second[0]]
    assert graph.add(*second, 2.0) == []
    assert graph.missing() == [first[0]]
    assert graph.add(*first, 3.0) == [first[0], second[0], third[0]]
    assert graph.heads == {third[0]}
    assert graph.arrived == {first[0]: 3.0, second[0]: 2.0, third[0]: 1.0}
    assert graph.missing() == []
    assert graph.add(*third, 4.0) == []  # a duplicate changes nothing
    assert graph.arrived[third[0]] == 1.0


# ---------------------------------------------------------------- the sync protocol


def converse(server: Document, state: SyncState, observer: change_graph.GraphSync) -> Iterator[int]:
    """Run the exchange until both sides are quiet; yield how many changes each server
    message carried."""
    for _ in range(50):
        sent = observer.generate()
        if sent is not None:
            server.receive_sync_message(state, Message.decode(sent))
        reply = server.generate_sync_message(state)
        if reply is None and sent is None:
            return
        if reply is not None:
            data = reply.encode()
            yield len(sync_codec.parse_sync_message(data).changes)
            observer.receive(data, 0.0)
    raise AssertionError("the exchange did not settle")


def test_the_server_sends_each_change_once_and_falls_quiet() -> None:
    server = document_with_hosts(3)
    state = SyncState()
    observer = change_graph.GraphSync()
    assert sum(converse(server, state, observer)) == 3
    assert observer.graph.heads == set(server.get_heads())
    for round_size in (1, 4, 2):
        for index in range(round_size):
            add_host(server, 100 + index)
        assert sum(converse(server, state, observer)) == round_size
        assert observer.graph.heads == set(server.get_heads())
    assert set(observer.graph.arrived) == {c.hash for c in server.get_changes([])}
    assert observer.generate() is None
    assert server.generate_sync_message(state) is None


def test_changes_streamed_before_an_answer_are_not_sent_again() -> None:
    server = document_with_hosts(1)
    state = SyncState()
    observer = change_graph.GraphSync()
    list(converse(server, state, observer))
    carried = []
    for index in range(5):  # the server speaks five times before the observer answers
        add_host(server, 200 + index)
        reply = server.generate_sync_message(state)
        assert reply is not None
        data = reply.encode()
        carried.append(len(sync_codec.parse_sync_message(data).changes))
        observer.receive(data, float(index))
    assert carried == [1, 1, 1, 1, 1]
    assert sum(converse(server, state, observer)) == 0
    assert observer.graph.heads == set(server.get_heads())


# ---------------------------------------------------------------- writing prepared changes


def batches_of(doc: Document, size: int) -> list[list[bytes]]:
    chunks = [change.bytes for change in doc.get_changes([])]
    return [chunks[i : i + size] for i in range(0, len(chunks), size)]


@pytest.mark.parametrize("size", [1, 3])
def test_prepared_offers_reach_automerge_and_nothing_comes_back(size: int) -> None:
    source = document_with_hosts(7)
    writer = change_graph.GraphSync()
    offers = writer.prepare(batches_of(source, size))
    assert writer.graph.arrived == {}  # preparing sends nothing
    peer, state = Document(), SyncState()
    for offer in offers:
        writer.take(offer, 1.0)
        peer.receive_sync_message(state, Message.decode(offer.data))
        assert peer.get_heads() == offer.heads == writer.graph.sorted_heads()
        reply = peer.generate_sync_message(state)
        assert reply is not None
        answer = sync_codec.parse_sync_message(reply.encode())
        assert answer.changes == []  # no echo of what the writer just sent
        writer.receive(reply.encode(), 2.0)
    assert peer.get_heads() == source.get_heads()
    assert sum(converse(peer, state, writer)) == 0
    assert writer.generate() is None
    assert set(writer.own) == {c.hash for c in source.get_changes([])}


def test_prepared_offers_continue_from_what_was_taken() -> None:
    source = document_with_hosts(2)
    writer = change_graph.GraphSync()
    (first,) = writer.prepare([[source.get_changes([])[0].bytes]])
    writer.take(first, 0.0)
    (second,) = writer.prepare([[source.get_changes([])[1].bytes]])
    assert second.changes == ((source.get_heads()[0], tuple(first.heads)),)
    assert second.heads == source.get_heads()


def test_a_needed_change_of_ours_is_sent_again() -> None:
    source = document_with_hosts(3)
    writer = change_graph.GraphSync()
    for offer in writer.prepare(batches_of(source, 1)):
        writer.take(offer, 0.0)
    lost = source.get_changes([])[1]
    writer.receive(sync_codec.encode_sync_message([], [lost.hash], [[]]), 0.0)
    message = sync_codec.parse_sync_message(writer.generate() or b"")
    assert message.changes == [lost.bytes]
    assert message.heads == source.get_heads()
    writer.receive(sync_codec.encode_sync_message(source.get_heads(), [], [[]]), 0.0)
    assert writer.generate() is None


# ---------------------------------------------------------------- a real node


async def test_observes_every_published_change_of_a_crdtmds_node(tmp_path: Path) -> None:
    from crdtmds.bootstrap import init_cluster
    from crdtmds.server import Server

    password = "observer-test-password"
    await init_cluster(
        tmp_path / "a", name="a", listen_host="127.0.0.1", listen_port=0, url="",
        region="eu", admin="admin", password=password,
    )  # fmt: skip
    node = await Server.open(tmp_path / "a")
    await node.start()
    peer = None
    try:
        await node.cluster_admin.create_domain("lab", created_by="admin")
        document_id = node.documents.domain("lab").document_id
        query = urlencode({"user": "admin", "password": password})
        peer = await observers.GraphPeer(node.config.url, query=query).start(timeout=10)
        peer.request(document_id)
        for index in range(3):
            session = await node.sessions.open("lab", admin="admin")
            session.add_object("host", {"name": f"h{index}", "ipv4-address": "192.0.2.1"})
            await node.sessions.publish(session)
        doc = node.documents.document(document_id)
        assert doc is not None
        await asyncio.wait_for(_until(lambda: peer.holds(document_id, doc.get_heads())), 10)
        assert set(peer.graph(document_id).arrived) == {c.hash for c in doc.get_changes([])}
        assert peer.failure is None
    finally:
        if peer is not None:
            await peer.close()
        await node.stop()


async def test_a_writer_streams_prepared_changes_into_a_crdtmds_node(tmp_path: Path) -> None:
    from dataclasses import asdict

    from crdtmds.bootstrap import init_cluster
    from crdtmds.server import Server
    from crdtmds.sync.protocol import new_document_id

    await init_cluster(
        tmp_path / "a", name="a", listen_host="127.0.0.1", listen_port=0, url="",
        region="eu", admin="admin", password="writer-test-password",
    )  # fmt: skip
    node = await Server.open(tmp_path / "a")
    await node.start()
    config = asdict(node.config)
    peers: list[observers.GraphPeer] = []
    try:
        for name in ("bench-writer", "bench-observer"):
            metadata = credentials.server_join_metadata(config, name)
            peers.append(await observers.GraphPeer(node.config.url, metadata=metadata).start(10))
        writer, observer = peers
        document_id = new_document_id()
        source = document_with_hosts(9)
        (first, *rest) = batches_of(source, 2)
        for offer in writer.prepare(document_id, [first]):
            writer.write(document_id, offer)
        observer.request(document_id)
        offers = writer.prepare(document_id, rest)
        assert all(offer.frame for offer in offers)
        await writer.stream(document_id, offers)
        heads = source.get_heads()
        await asyncio.wait_for(_until(lambda: observer.holds(document_id, heads)), 10)
        doc = node.documents.document(document_id)
        assert doc is not None and doc.get_heads() == heads
        assert writer.failure is None and observer.failure is None
    finally:
        for peer in peers:
            await peer.close()
        await node.stop()


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)
