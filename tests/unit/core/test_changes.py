"""Decoding Automerge change chunks, checked against changes the automerge package makes."""

from __future__ import annotations

import hashlib
import zlib

import pytest
from automerge.core import ROOT, Document, ObjType, ScalarType
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmds.core.changes import (
    DEL,
    HEAD,
    MAKE_LIST,
    MAKE_MAP,
    MAKE_TEXT,
    ROOT_ID,
    SET,
    Op,
    applied_chunks,
    change_hash_and_deps,
    decode_change,
    encode_uleb128,
    parse_object_id,
    read_uleb128,
)
from crdtmds.errors import ProtocolError

ALICE = bytes.fromhex("aa01")
BOB = bytes.fromhex("bb02")


def only_change(doc: Document) -> tuple[bytes, bytes]:
    change = doc.get_last_local_change()
    assert change is not None
    return change.raw_bytes, change.hash


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def chunk_of(body: bytes) -> bytes:
    """A change chunk around `body`, with the right checksum."""
    header = b"\x01" + uleb(len(body))
    checksum = hashlib.sha256(header + body).digest()[:4]
    return b"\x85\x6f\x4a\x83" + checksum + header + body


def body_of(chunk: bytes) -> bytes:
    assert chunk[8] == 1
    length_end = 9
    while chunk[length_end] & 0x80:
        length_end += 1
    return chunk[length_end + 1 :]


def test_map_puts_and_nested_objects() -> None:
    doc = Document(ALICE)
    with doc.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "acme")
        record = tx.put_object(ROOT, "objects", ObjType.Map)
        tx.put(record, "uid", ScalarType.Str, "u1")
        tags = tx.put_object(record, "tags", ObjType.List)
        note = tx.put_object(record, "note", ObjType.Text)
    raw, change_hash = only_change(doc)
    change = decode_change(raw)
    assert change.hash == change_hash
    assert (change.actor, change.seq, change.start_op, change.deps) == (ALICE, 1, 1, ())
    record_id, tags_id, note_id = (parse_object_id(x) for x in (record, tags, note))
    assert record_id == (2, ALICE)
    assert change.ops == (
        Op((1, ALICE), ROOT_ID, "name", False, SET),
        Op((2, ALICE), ROOT_ID, "objects", False, MAKE_MAP),
        Op((3, ALICE), record_id, "uid", False, SET),
        Op((4, ALICE), record_id, "tags", False, MAKE_LIST),
        Op((5, ALICE), record_id, "note", False, MAKE_TEXT),
    )
    assert tags_id == (4, ALICE)
    assert note_id == (5, ALICE)


def test_list_inserts_and_deletes_name_elements() -> None:
    doc = Document(ALICE)
    with doc.transaction() as tx:
        items = tx.put_object(ROOT, "items", ObjType.List)
        tx.insert(items, 0, ScalarType.Str, "a")
        tx.insert(items, 1, ScalarType.Str, "b")
        tx.insert(items, 0, ScalarType.Str, "first")
        nested = tx.insert_object(items, 3, ObjType.Map)
        tx.put(nested, "k", ScalarType.Int, 1)
    with doc.transaction() as tx:
        tx.delete(items, 1)  # "a"
        tx.put(items, 0, ScalarType.Str, "replaced")
    first, second = (decode_change(c.raw_bytes) for c in doc.get_changes([]))
    items_id = (1, ALICE)
    assert first.ops == (
        Op((1, ALICE), ROOT_ID, "items", False, MAKE_LIST),
        Op((2, ALICE), items_id, HEAD, True, SET),
        Op((3, ALICE), items_id, (2, ALICE), True, SET),
        Op((4, ALICE), items_id, HEAD, True, SET),
        Op((5, ALICE), items_id, (3, ALICE), True, MAKE_MAP),
        Op((6, ALICE), (5, ALICE), "k", False, SET),
    )
    assert second.deps == (first.hash,)
    assert (second.seq, second.start_op) == (2, 7)
    assert second.ops == (
        Op((7, ALICE), items_id, (2, ALICE), False, DEL),
        Op((8, ALICE), items_id, (4, ALICE), False, SET),
    )
    # The ids the package gives for list elements are the ids the changes carry.
    assert [parse_object_id(i) for _, i in doc.values(items)] == [(8, ALICE), (3, ALICE),
                                                                   (5, ALICE)]  # fmt: skip


def test_other_actors_are_named_by_index() -> None:
    alice = Document(ALICE)
    with alice.transaction() as tx:
        shared = tx.put_object(ROOT, "shared", ObjType.List)
        tx.insert(shared, 0, ScalarType.Str, "a")
    bob = Document(BOB)
    bob.merge(alice)
    with bob.transaction() as tx:
        tx.insert(shared, 1, ScalarType.Str, "b")
        tx.put(ROOT, "x", ScalarType.Int, 1)
    raw, _ = only_change(bob)
    change = decode_change(raw)
    assert change.actor == BOB
    assert change.start_op == 3
    assert change.ops == (
        Op((3, BOB), (1, ALICE), (2, ALICE), True, SET),
        Op((4, BOB), ROOT_ID, "x", False, SET),
    )
    # The package numbers actors per document; the parsed ids do not depend on it.
    assert parse_object_id(bob.get(ROOT, "shared")[1]) == (1, ALICE)
    assert parse_object_id(alice.get(ROOT, "shared")[1]) == (1, ALICE)


def test_a_large_change_is_compressed_and_decodes_the_same() -> None:
    doc = Document(ALICE)
    with doc.transaction() as tx:
        big = tx.put_object(ROOT, "big", ObjType.Map)
        for index in range(3000):
            tx.put(big, f"key-{index}", ScalarType.Str, f"value-{index}")
    (change,) = doc.get_changes([])
    assert change.bytes[8] == 2  # compressed
    assert change.raw_bytes[8] == 1
    compressed, plain = decode_change(change.bytes), decode_change(change.raw_bytes)
    assert compressed == plain
    assert plain.hash == change.hash
    assert len(plain.ops) == 3001
    assert plain.ops[-1] == Op((3001, ALICE), (1, ALICE), "key-2999", False, SET)
    assert {op.key for op in plain.ops[1:]} == {f"key-{i}" for i in range(3000)}


def test_a_high_counter_and_long_actor() -> None:
    actor = bytes(range(16))
    doc = Document(actor)
    with doc.transaction() as tx:
        for index in range(300):
            tx.put(ROOT, "k", ScalarType.Int, index)
        obj = tx.put_object(ROOT, "m", ObjType.Map)
    raw, _ = only_change(doc)
    assert decode_change(raw).ops[-1] == Op((301, actor), ROOT_ID, "m", False, MAKE_MAP)
    assert parse_object_id(obj) == (301, actor)


def test_parse_object_id_of_root_and_garbage() -> None:
    assert parse_object_id(ROOT) == ROOT_ID
    for bad in (b"", b"\x20\x01a", b"\x10\x05ab", b"\x10\x01a\x00\x01\x00"):
        with pytest.raises(ProtocolError):
            parse_object_id(bad)


def small_change() -> bytes:
    doc = Document(ALICE)
    with doc.transaction() as tx:
        items = tx.put_object(ROOT, "items", ObjType.List)
        tx.insert(items, 0, ScalarType.Str, "a")
        tx.put(ROOT, "name", ScalarType.Str, "n")
    return only_change(doc)[0]


def test_every_truncation_is_refused() -> None:
    raw = small_change()
    for length in range(len(raw)):
        with pytest.raises(ProtocolError):
            decode_change(raw[:length])


def test_bad_headers_are_refused() -> None:
    raw = small_change()
    wrong_checksum = raw[:4] + bytes(4) + raw[8:]
    document_chunk = raw[:8] + b"\x00" + raw[9:]
    for bad in (b"", b"not a change", wrong_checksum, document_chunk, raw + b"\x00"):
        with pytest.raises(ProtocolError):
            decode_change(bad)


def test_bad_compressed_body_is_refused() -> None:
    raw = small_change()
    garbage = b"\x85\x6f\x4a\x83" + raw[4:8] + b"\x02\x05" + b"\xff" * 5
    with pytest.raises(ProtocolError):
        decode_change(garbage)
    body = zlib.compress(body_of(raw))[2:-4]
    truncated = b"\x85\x6f\x4a\x83" + raw[4:8] + b"\x02" + uleb(len(body) - 3) + body[:-3]
    with pytest.raises(ProtocolError):
        decode_change(truncated)


def test_a_huge_run_claim_is_refused_without_building_it() -> None:
    # No deps, actor "aa", seq 1, start op 1, time 0, no message, no other actors, one
    # column (actions) holding a run of 2**40 identical values.
    body = b"\x00\x01\xaa\x01\x01\x00\x00\x00" + b"\x01\x42\x07" + b"\x80\x80\x80\x80\x80\x20\x01"
    with pytest.raises(ProtocolError):
        decode_change(chunk_of(body))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_bodies_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    body = bytearray(body_of(small_change()))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(body) - 1))
        body[index] = data.draw(st.integers(0, 255))
    try:
        change = decode_change(chunk_of(bytes(body)))
    except ProtocolError:
        return
    assert all(isinstance(op, Op) for op in change.ops)


def test_leb128_round_trip_and_errors() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**63 - 1):
        encoded = encode_uleb128(value)
        assert read_uleb128(b"x" + encoded + b"y", 1) == (value, 1 + len(encoded))
    with pytest.raises(ValueError, match="truncated"):
        read_uleb128(b"\x80\x80", 0)
    with pytest.raises(ValueError, match="too long"):
        read_uleb128(b"\xff" * 10 + b"\x01", 0)


def _chain(doc: Document, count: int) -> list[tuple[bytes, bytes]]:
    """`count` new changes of `doc`, as (hash, chunk)."""
    made = []
    for index in range(count):
        with doc.transaction() as tx:
            tx.put(ROOT, f"k{index}", ScalarType.Int, index)
        made.append(only_change(doc)[::-1])
    return made


def test_change_hash_and_deps_of_a_chunk() -> None:
    doc = Document(actor_id=ALICE)
    (first_hash, first), (second_hash, second) = _chain(doc, 2)
    assert change_hash_and_deps(first) == (first_hash, ())
    assert change_hash_and_deps(second) == (second_hash, (first_hash,))
    with pytest.raises(ProtocolError):
        change_hash_and_deps(second[:-1])


def test_applied_chunks_when_they_are_exactly_what_moved_the_heads() -> None:
    doc = Document(actor_id=ALICE)
    (h0, _), (h1, c1), (h2, c2) = _chain(doc, 3)
    assert applied_chunks([c1, c2], [h0], [h2]) == [(h1, c1), (h2, c2)]
    # Automerge may send several changes as one entry of concatenated chunks.
    assert applied_chunks([c1 + c2], [h0], [h2]) == [(h1, c1), (h2, c2)]
    # A concurrent branch: the old head stays a head.
    other = Document(actor_id=BOB)
    (b0, d0), (b1, d1) = _chain(other, 2)
    assert applied_chunks([d0, d1], [h2], [h2, b1]) == [(b0, d0), (b1, d1)]


def test_applied_chunks_is_none_when_the_heads_say_otherwise() -> None:
    doc = Document(actor_id=ALICE)
    (h0, c0), (h1, c1), (h2, c2) = _chain(doc, 3)
    # c2 queued for its missing dependency c1: the heads did not move to it.
    assert applied_chunks([c2], [h0], [h0]) is None
    # A change released from the queue besides the chunks (c2 arrived earlier).
    assert applied_chunks([c1], [h0], [h2]) is None
    # A chunk held already, that nothing new depends on.
    assert applied_chunks([c0, c2], [h1], [h2]) is None
    # Bytes that are not a change chunk, or not only change chunks.
    assert applied_chunks([b"garbage"], [h0], [h1]) is None
    assert applied_chunks([c1 + b"garbage"], [h0], [h1]) is None
    assert applied_chunks([Document.load(c0).save()], [], [h0]) is None
