"""The operations inside Automerge change chunks, decoded without the Automerge core.

Sans-I/O and pure: `decode_change(chunk)` turns the bytes of one change chunk
(`Change.raw_bytes`, or the DEFLATE-compressed `Change.bytes`) into a `DecodedChange` whose
`ops` say, for each operation, which object it acts on, at which key or list element, with
which action, and the operation's own id. Values and predecessors are skipped: the caller
only needs to know *where* a change writes, so that it re-reads just those places.

The format is Automerge's binary change format: a chunk header (magic, checksum, type,
length), the change metadata, then the operations stored column by column, each column
run-length, delta or boolean encoded. Bytes that do not follow it raise `ProtocolError`;
every count read from the input is bounded before use, so bad input never hangs or
exhausts memory.

`parse_object_id` reads the object ids the automerge package hands out (`doc.get`,
`doc.values`), so that ids from a document and ids from decoded changes compare equal.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from crdtmds.errors import ProtocolError

__all__ = [
    "DEL",
    "HEAD",
    "INC",
    "MAKE_ACTIONS",
    "MAKE_LIST",
    "MAKE_MAP",
    "MAKE_TABLE",
    "MAKE_TEXT",
    "MARK",
    "ROOT_ID",
    "SET",
    "DecodedChange",
    "ObjectId",
    "Op",
    "applied_chunks",
    "change_hash_and_deps",
    "decode_change",
    "parse_object_id",
    "split_chunks",
]

ObjectId = tuple[int, bytes]
"""(counter, actor id) of the operation that created an object or list element."""

ROOT_ID: ObjectId = (0, b"")
"""The document's root map."""
HEAD: ObjectId = (0, b"")
"""The start of a list: the reference of an insert at index 0."""

# Operation actions, as numbered in the format.
MAKE_MAP = 0
SET = 1
MAKE_LIST = 2
DEL = 3
MAKE_TEXT = 4
INC = 5
MAKE_TABLE = 6
MARK = 7
MAKE_ACTIONS = frozenset({MAKE_MAP, MAKE_LIST, MAKE_TEXT, MAKE_TABLE})
"""Actions that create a new object whose id is the operation's id."""

MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_CHANGE = 1
CHUNK_COMPRESSED_CHANGE = 2

# Column specifications (column id << 4 | type), with the DEFLATE bit (8) masked off.
COL_OBJ_ACTOR = 0x01
COL_OBJ_CTR = 0x02
COL_KEY_ACTOR = 0x11
COL_KEY_CTR = 0x13
COL_KEY_STR = 0x15
COL_INSERT = 0x34
COL_ACTION = 0x42
DEFLATE_BIT = 0x08

MAX_INFLATED = 256 * 1024 * 1024
"""Largest decompressed size accepted (far above any change crdtmds writes)."""
MAX_OPS = 1 << 22
"""Most operations accepted in one change: run-length encoding lets a few bytes claim any
number of them, so the count is bounded before lists are built."""


class Op(NamedTuple):
    """One operation of a change. (A named tuple: a change's operations are made by the
    thousand, and a tuple is built several times faster than a frozen dataclass.)"""

    id: ObjectId
    obj: ObjectId
    """The object acted on: ROOT_ID or the id of the operation that created it."""
    key: str | ObjectId
    """A map key, or in a list the element id (HEAD for an insert at the start)."""
    insert: bool
    """Whether the operation inserts a new list element after `key` (its id is `id`)."""
    action: int


@dataclass(frozen=True, slots=True)
class DecodedChange:
    hash: bytes
    actor: bytes
    seq: int
    start_op: int
    deps: tuple[bytes, ...]
    ops: tuple[Op, ...]


def decode_change(chunk: bytes) -> DecodedChange:
    """The operations of one change chunk (plain or compressed); ProtocolError if malformed."""
    body, digest = _checked_body(bytes(chunk))
    try:
        return _decode_body(body, digest)
    except _Truncated:
        raise ProtocolError("truncated change chunk") from None


def parse_object_id(exid: bytes) -> ObjectId:
    """An object id as the automerge package encodes it (`doc.get(...)[1]`).

    One byte of version and kind (0x00: the root; 0x10: an id), then the actor id's length
    and bytes, the actor's index in that document, and the counter (uLEBs). The index
    depends on the document, so it is dropped.
    """
    if exid == b"\x00":
        return ROOT_ID
    reader = _Reader(exid)
    try:
        if reader.byte() != 0x10:
            raise ProtocolError("unknown object id form")
        actor = reader.take(reader.uleb())
        reader.uleb()
        counter = reader.uleb()
    except _Truncated:
        raise ProtocolError("truncated object id") from None
    if not reader.at_end():
        raise ProtocolError("trailing bytes in an object id")
    return (counter, actor)


# ---------------------------------------------------------------- chunk and metadata


def _checked_body(chunk: bytes) -> tuple[bytes, bytes]:
    """The uncompressed body of one change chunk and the change's hash, its checksum
    checked; ProtocolError if the chunk is malformed."""
    reader = _Reader(chunk)
    try:
        if reader.take(4) != MAGIC:
            raise ProtocolError("not an Automerge chunk")
        checksum = reader.take(4)
        chunk_type = reader.byte()
        body = reader.take(reader.uleb())
    except _Truncated:
        raise ProtocolError("truncated chunk header") from None
    if not reader.at_end():
        raise ProtocolError("trailing bytes after the change chunk")
    if chunk_type == CHUNK_COMPRESSED_CHANGE:
        body = _inflate(body)
    elif chunk_type != CHUNK_CHANGE:
        raise ProtocolError(f"chunk type {chunk_type} is not a change")
    digest = change_hash(body)
    if digest[:4] != checksum:
        raise ProtocolError("change chunk checksum mismatch")
    return body, digest


def applied_chunks(
    entries: Sequence[bytes], before_heads: list[bytes], heads: list[bytes]
) -> list[tuple[bytes, bytes]] | None:
    """``(hash, chunk)`` for each change chunk in `entries` (a sync message's changes, each
    one or more chunks), if applying them is exactly what took a document from
    `before_heads` to `heads`; else None (a whole document in a message included).

    The heads they would give are the old heads and the chunks' hashes, less every hash a
    chunk depends on. When that matches `heads`, every chunk was applied (one left queued
    for a missing dependency would be a head or the dependency of one) and no other change
    was (one released from the queue would be a head or hide one). A chunk that was held
    already may be among them: storage ignores it. None means "ask the document".
    """
    pairs: list[tuple[bytes, bytes]] = []
    covered: set[bytes] = set()
    try:
        for entry in entries:
            for chunk in split_chunks(entry):
                digest, deps = change_hash_and_deps(chunk)
                pairs.append((digest, chunk))
                covered.update(deps)
    except (ProtocolError, ValueError):
        return None
    predicted = (set(before_heads) | {h for h, _ in pairs}) - covered
    return pairs if predicted == set(heads) else None


def split_chunks(data: bytes) -> list[bytes]:
    """The consecutive chunks `data` is made of, by their headers (not otherwise checked);
    ValueError if it is not such a sequence."""
    chunks = []
    position = 0
    while position < len(data):
        if len(data) - position < 10 or data[position : position + 4] != MAGIC:
            raise ValueError(f"no chunk at byte {position}")
        length, start = read_uleb128(data, position + 9)
        if start + length > len(data):
            raise ValueError(f"chunk at byte {position} is truncated")
        chunks.append(data[position : start + length])
        position = start + length
    return chunks


def change_hash_and_deps(chunk: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """The hash and the dependencies of one change chunk (plain or compressed), its
    checksum checked; ProtocolError if it is malformed."""
    body, digest = _checked_body(chunk)
    return digest, change_deps(body)


def change_hash(body: bytes) -> bytes:
    """The hash of the change whose uncompressed body is `body` (its chunk's checksum is
    the first 4 bytes)."""
    return chunk_hash(CHUNK_CHANGE, body)


def chunk_hash(chunk_type: int, body: bytes) -> bytes:
    """SHA-256 of a chunk's type, length and uncompressed body; its checksum is the first
    4 bytes (and a change's hash the whole of it)."""
    return hashlib.sha256(bytes([chunk_type]) + encode_uleb128(len(body)) + body).digest()


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, MAX_INFLATED)
    except zlib.error as exc:
        raise ProtocolError(f"bad compressed change: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ProtocolError("compressed change is truncated or too large")
    return out


def _decode_body(body: bytes, digest: bytes) -> DecodedChange:
    reader = _Reader(body)
    deps = _read_deps(reader)
    actor = reader.take(reader.uleb())
    seq = reader.uleb()
    start_op = reader.uleb()
    reader.sleb()  # timestamp
    reader.take(reader.uleb())  # message
    actors = [actor] + [reader.take(reader.uleb()) for _ in range(reader.count(1))]
    columns = _read_columns(reader)
    ops = _decode_ops(columns, actors, actor, start_op)
    return DecodedChange(digest, actor, seq, start_op, deps, ops)


def change_deps(body: bytes) -> tuple[bytes, ...]:
    """The hashes of the changes a change depends on, which open its uncompressed body;
    ProtocolError if they cannot be read."""
    try:
        return _read_deps(_Reader(body))
    except _Truncated:
        raise ProtocolError("truncated change chunk") from None


def _read_deps(reader: _Reader) -> tuple[bytes, ...]:
    return tuple(reader.take(32) for _ in range(reader.count(32)))


def _read_columns(reader: _Reader) -> dict[int, bytes]:
    specs = [(reader.uleb(), reader.uleb()) for _ in range(reader.count(2))]
    columns: dict[int, bytes] = {}
    for spec, length in specs:
        data = reader.take(length)
        if spec & DEFLATE_BIT:
            data = _inflate(data)
        columns[spec & ~DEFLATE_BIT] = data
    return columns


def _decode_ops(
    columns: dict[int, bytes], actors: list[bytes], actor: bytes, start_op: int
) -> tuple[Op, ...]:
    actions = _rle(columns.get(COL_ACTION, b""), _Reader.uleb, MAX_OPS)
    count = len(actions)
    obj_actor = _padded(_rle(columns.get(COL_OBJ_ACTOR, b""), _Reader.uleb, count), count)
    obj_ctr = _padded(_rle(columns.get(COL_OBJ_CTR, b""), _Reader.uleb, count), count)
    key_actor = _padded(_rle(columns.get(COL_KEY_ACTOR, b""), _Reader.uleb, count), count)
    key_ctr = _padded(_delta(columns.get(COL_KEY_CTR, b""), count), count)
    key_str = _padded(_rle(columns.get(COL_KEY_STR, b""), _Reader.text, count), count)
    inserts = _booleans(columns.get(COL_INSERT, b""), count)
    ops = []
    for index in range(count):
        action = actions[index]
        if action is None:
            raise ProtocolError("operation without an action")
        ops.append(
            Op(
                id=(start_op + index, actor),
                obj=_object(obj_ctr[index], obj_actor[index], actors),
                key=_key(key_str[index], key_ctr[index], key_actor[index], actors),
                insert=inserts[index],
                action=action,
            )
        )
    return tuple(ops)


def _object(counter: int | None, actor: int | None, actors: list[bytes]) -> ObjectId:
    if counter is None and actor is None:
        return ROOT_ID
    if counter is None or actor is None or counter == 0:
        raise ProtocolError("malformed object id in a change")
    return (counter, _actor(actor, actors))


def _key(
    text: str | None, counter: int | None, actor: int | None, actors: list[bytes]
) -> str | ObjectId:
    if text is not None:
        return text
    if counter == 0 and actor is None:
        return HEAD
    if counter is None or actor is None or counter < 0:
        raise ProtocolError("operation without a key")
    return (counter, _actor(actor, actors))


def _actor(index: int, actors: list[bytes]) -> bytes:
    if index >= len(actors):
        raise ProtocolError(f"actor index {index} out of range")
    return actors[index]


# ---------------------------------------------------------------- column encodings

T = TypeVar("T")


def _padded(values: list[T | None], count: int) -> list[T | None]:
    # A column may stop early (or be absent) when the rest of it is null.
    return values + [None] * (count - len(values))


def _check_room(produced: int, more: int, limit: int) -> None:
    if produced + more > limit:
        raise ProtocolError("a column holds more values than the change has operations")


def _rle(data: bytes, read: Callable[[_Reader], T], limit: int) -> list[T | None]:
    """Runs of values: a length > 0 and one repeated value, < 0 and literals, 0 and a
    count of nulls."""
    values: list[T | None] = []
    reader = _Reader(data)
    end = len(data)
    while reader.pos < end:
        run = reader.sleb()
        if run > 0:
            _check_room(len(values), run, limit)
            values.extend([read(reader)] * run)
        elif run < 0:
            _check_room(len(values), -run, limit)
            values.extend([read(reader) for _ in range(-run)])
        else:
            nulls = reader.uleb()
            _check_room(len(values), nulls, limit)
            values.extend([None] * nulls)
    return values


def _delta(data: bytes, limit: int) -> list[int | None]:
    values: list[int | None] = []
    total = 0
    for delta in _rle(data, _Reader.sleb, limit):
        if delta is None:
            values.append(None)
        else:
            total += delta
            values.append(total)
    return values


def _booleans(data: bytes, count: int) -> list[bool]:
    values: list[bool] = []
    reader = _Reader(data)
    value = False
    while not reader.at_end():
        run = reader.uleb()
        _check_room(len(values), run, count)
        values.extend([value] * run)
        value = not value
    return values + [False] * (count - len(values))


# ---------------------------------------------------------------- primitive reads


class _Truncated(ValueError):
    """The input ended inside a value."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Truncated
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, length: int) -> bytes:
        end = self.pos + length
        if end > len(self.data):
            raise _Truncated
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def count(self, min_size: int) -> int:
        """A count of items each at least `min_size` bytes long, checked against the input."""
        value = self.uleb()
        if value * min_size > len(self.data) - self.pos:
            raise _Truncated
        return value

    def uleb(self) -> int:
        # Most numbers in a change are below 128: one byte, read without a call.
        pos = self.pos
        if pos < len(self.data) and self.data[pos] < 0x80:
            self.pos = pos + 1
            return self.data[pos]
        try:
            value, self.pos = read_uleb128(self.data, self.pos)
        except _Truncated:
            raise
        except ValueError:
            raise ProtocolError("LEB128 number longer than 64 bits") from None
        return value

    # The LEB128 reads are the decoder's innermost loop: locals, not `byte()` calls.
    def sleb(self) -> int:
        data, pos = self.data, self.pos
        result = shift = 0
        while True:
            if pos >= len(data):
                raise _Truncated
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                self.pos = pos
                return result - (1 << shift) if byte & 0x40 else result
            if shift > 63:
                raise ProtocolError("LEB128 number longer than 64 bits")

    def text(self) -> str:
        raw = self.take(self.uleb())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("a key is not UTF-8") from None


def encode_uleb128(value: int) -> bytes:
    """`value` as unsigned LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_uleb128(data: bytes, position: int) -> tuple[int, int]:
    """The unsigned LEB128 integer at ``position`` and the position after it; ValueError
    if the input ends inside it or it does not fit in 64 bits."""
    value = 0
    shift = 0
    end = len(data)
    while True:
        if position >= end:
            raise _Truncated("truncated integer")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >> 64:
                raise ValueError("integer too long")
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("integer too long")
