"""Automerge sync messages as bytes: reading their fields, writing them, and sharing the
changes of one out between several under a size limit.

The Automerge core only generates and receives whole messages; the servers also need to
see what one carries (its heads, whether it has changes, the change chunks to persist)
and to keep each frame they send under the peers' limit. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from crdtmds.core.changes import change_hash_and_deps, encode_uleb128, read_uleb128, split_chunks
from crdtmds.errors import ProtocolError

SYNC_MESSAGE_V1 = 0x42
SYNC_MESSAGE_V2 = 0x43
_HASH_SIZE = 32
_CHUNK_TYPE_OFFSET = 8
"""Where a chunk's type byte is: after the magic bytes and the checksum."""
_CHUNK_DOCUMENT = 0
COUNT_MARGIN = 8
"""Bytes allowed for the length prefixes that a part of a split message may need more
of than the whole (its change count, the length of the frame's byte string)."""


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


def try_parse_sync_message(data: bytes) -> SyncMessage | None:
    """The fields of `data`, or None when this reader does not know its form."""
    # Automerge accepted the message; a form this reader does not know only means the
    # server asks the document for the changes instead.
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
    fixed = len(encode_sync_message(replace(message, changes=[]))) + COUNT_MARGIN
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
