"""The benchmarks' change-graph observer (bench/common.py): sync message fields, change
hashes and dependencies, heads, and the sync protocol against Automerge's own.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import common

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
    from crdtmds.storage import _encode_uleb128, _read_uleb128

    length, start = _read_uleb128(raw, 9)
    assert raw[8] == 1 and len(raw) - start == length
    squeezer = zlib.compressobj(wbits=-15)
    body = squeezer.compress(raw[start:]) + squeezer.flush()
    return raw[:8] + b"\x02" + _encode_uleb128(len(body)) + body


# ---------------------------------------------------------------- change chunks


def test_change_hash_and_deps_match_the_automerge_change() -> None:
    doc = document_with_hosts(3)
    with doc.transaction() as tx:  # a second actor's concurrent change makes two heads
        tx.put(ROOT, "note", ScalarType.Str, "x")
    for change in doc.get_changes([]):
        assert common.change_hash_and_deps(change.raw_bytes) == (change.hash, tuple(change.deps))


def test_a_deflated_change_has_the_hash_of_its_uncompressed_form() -> None:
    doc = Document()
    with doc.transaction() as tx:
        for index in range(200):
            tx.put(ROOT, f"key-{index}", ScalarType.Str, "value " * 20)
    (change,) = doc.get_changes([])
    assert change.bytes[8] == 2  # the package itself deflates a change this large
    assert common.change_hash_and_deps(change.bytes) == (change.hash, ())
    small = document_with_hosts(2).get_changes([])[1]
    assert common.change_hash_and_deps(deflated(small.raw_bytes)) == (small.hash, (small.deps[0],))


def test_a_corrupt_change_chunk_is_refused() -> None:
    raw = bytearray(document_with_hosts(1).get_changes([])[0].raw_bytes)
    raw[-1] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        common.change_hash_and_deps(bytes(raw))


# ---------------------------------------------------------------- sync messages


def test_parse_reads_a_v1_message_with_its_changes() -> None:
    doc = document_with_hosts(3)
    state = SyncState()
    doc.receive_sync_message(state, Message.decode(common.encode_sync_message([], [], [[]])))
    data = doc.generate_sync_message(state).encode()
    assert data[0] == common.SYNC_MESSAGE_V1
    message = common.parse_sync_message(data)
    assert message.heads == doc.get_heads()
    assert message.need == []
    changes = doc.get_changes([])
    assert message.changes == [change.raw_bytes for change in changes]
    assert common.sync_message_changes(message) == [(c.hash, tuple(c.deps)) for c in changes]


def test_a_v2_whole_document_yields_every_change() -> None:
    doc = document_with_hosts(4)
    state = SyncState()
    asking = Document().generate_sync_message(SyncState())  # advertises v2
    doc.receive_sync_message(state, asking)
    data = doc.generate_sync_message(state).encode()
    assert data[0] == common.SYNC_MESSAGE_V2
    message = common.parse_sync_message(data)
    assert message.capabilities == b"\x01\x02"
    assert [chunk[8] for chunk in message.changes] == [0]  # one document chunk
    found = common.sync_message_changes(message)
    assert found == [(c.hash, tuple(c.deps)) for c in doc.get_changes([])]


def test_concatenated_chunks_in_one_entry_are_all_read() -> None:
    changes = document_with_hosts(3).get_changes([])
    joined = b"".join(change.raw_bytes for change in changes)
    message = common.SyncMessage([], [], [], [joined])
    assert [h for h, _ in common.sync_message_changes(message)] == [c.hash for c in changes]


def test_encoded_message_is_what_automerge_reads() -> None:
    heads = sorted(document_with_hosts(2).get_heads() + document_with_hosts(3).get_heads())
    data = common.encode_sync_message(heads, [heads[0]], [heads])
    assert common.parse_sync_message(data) == common.SyncMessage(
        heads, [heads[0]], [(heads, b"")], [], None
    )
    decoded = Message.decode(data)  # the core accepts it
    assert decoded.encode() == data


@pytest.mark.parametrize(
    "data",
    [b"", b"\x41\x00\x00\x00\x00", b"\x42\x01" + b"\x00" * 31, b"\x42\x00\x00\x00\x01\x05"],
)
def test_malformed_messages_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        common.parse_sync_message(data)


# ---------------------------------------------------------------- the graph


def test_heads_are_the_held_changes_nothing_depends_on() -> None:
    base = document_with_hosts(2)
    left, right = base.fork(), base.fork()
    add_host(left, 10)
    add_host(right, 11)
    base.merge(left)
    base.merge(right)
    graph = common.ChangeGraph()
    for change in base.get_changes([]):
        assert graph.add(change.hash, change.deps, 1.0) == [change.hash]
    assert graph.heads == set(base.get_heads())
    assert len(graph.heads) == 2
    assert set(graph.arrived) == {c.hash for c in base.get_changes([])}


def test_a_change_waits_for_its_dependencies() -> None:
    changes = document_with_hosts(3).get_changes([])
    first, second, third = ((c.hash, c.deps) for c in changes)
    graph = common.ChangeGraph()
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


def converse(server: Document, state: SyncState, observer: common.GraphSync) -> Iterator[int]:
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
            yield len(common.parse_sync_message(data).changes)
            observer.receive(data, 0.0)
    raise AssertionError("the exchange did not settle")


def test_the_server_sends_each_change_once_and_falls_quiet() -> None:
    server = document_with_hosts(3)
    state = SyncState()
    observer = common.GraphSync()
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
    observer = common.GraphSync()
    list(converse(server, state, observer))
    carried = []
    for index in range(5):  # the server speaks five times before the observer answers
        add_host(server, 200 + index)
        reply = server.generate_sync_message(state)
        assert reply is not None
        data = reply.encode()
        carried.append(len(common.parse_sync_message(data).changes))
        observer.receive(data, float(index))
    assert carried == [1, 1, 1, 1, 1]
    assert sum(converse(server, state, observer)) == 0
    assert observer.graph.heads == set(server.get_heads())


# ---------------------------------------------------------------- a real node


async def test_observes_every_published_change_of_a_crdtmds_node(tmp_path: Path) -> None:
    from crdtmds.node import Node

    password = "observer-test-password"
    await Node.initialise(
        tmp_path / "a", name="a", listen_host="127.0.0.1", listen_port=0, url="",
        region="eu", admin="admin", password=password,
    )  # fmt: skip
    node = await Node.open(tmp_path / "a")
    await node.start()
    peer = None
    try:
        await node.create_domain("lab", created_by="admin")
        document_id = node.domain("lab").document_id
        query = urlencode({"user": "admin", "password": password})
        peer = await common.GraphPeer(node.config.url, query=query).start(timeout=10)
        peer.request(document_id)
        for index in range(3):
            session = await node.open_session("lab", admin="admin")
            session.add_object("host", {"name": f"h{index}", "ipv4-address": "192.0.2.1"})
            await node.publish(session)
        doc = node.document(document_id)
        assert doc is not None
        await asyncio.wait_for(_until(lambda: peer.holds(document_id, doc.get_heads())), 10)
        assert set(peer.graph(document_id).arrived) == {c.hash for c in doc.get_changes([])}
        assert peer.failure is None
    finally:
        if peer is not None:
            await peer.close()
        await node.stop()


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)
