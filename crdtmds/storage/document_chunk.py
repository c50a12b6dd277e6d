"""Automerge's binary forms as the store keeps them: a saved document's chunks, checked
before a snapshot is stored, and heads (32-byte change hashes) joined into one column.

A chunk is: magic (4 bytes), checksum (first 4 bytes of the SHA-256 of what follows it,
taken over the uncompressed form), chunk type (0 document, 1 change, 2 deflated change),
body length (unsigned LEB128), body. A change's hash is the whole SHA-256 of type, length
and body of its uncompressed form. These checks let a failed load name the row at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crdtmds.core.changes import MAGIC, change_hash_and_deps, chunk_hash, read_uleb128, split_chunks
from crdtmds.errors import ProtocolError

HEAD_SIZE = 32


def join_heads(heads: Sequence[bytes]) -> bytes:
    for head in heads:
        if len(head) != HEAD_SIZE:
            raise ValueError(f"a head is a {HEAD_SIZE}-byte change hash, got {len(head)} bytes")
    return b"".join(heads)


def split_heads(joined: bytes) -> list[bytes]:
    return [joined[start : start + HEAD_SIZE] for start in range(0, len(joined), HEAD_SIZE)]


_DOCUMENT_CHUNK = 0


@dataclass(frozen=True, slots=True)
class _Chunk:
    chunk_type: int
    checksum: bytes
    body: bytes


def _parse_chunk(data: bytes) -> _Chunk:
    """Split one whole chunk into its parts; the data must hold exactly that chunk."""
    if len(data) < 10:
        raise ValueError(f"{len(data)} bytes is too short for a chunk")
    if data[:4] != MAGIC:
        raise ValueError("invalid magic bytes")
    chunk_type = data[8]
    length, start = read_uleb128(data, 9)
    if len(data) - start != length:
        raise ValueError(f"body is {len(data) - start} bytes, header says {length}")
    return _Chunk(chunk_type, data[4:8], data[start:])


def is_change_log(data: bytes) -> bool:
    """Whether stored document bytes are change chunks (a snapshot kept as its change log)
    rather than a saved document (which starts with a document chunk)."""
    return len(data) > 8 and data[:4] == MAGIC and data[8] != _DOCUMENT_CHUNK


def change_log_problem(data: bytes) -> str | None:
    """Why stored change chunks are malformed, or None."""
    try:
        for chunk in split_chunks(data):
            change_hash_and_deps(chunk)
    except ValueError as exc:
        return str(exc)
    except ProtocolError as exc:
        return exc.message
    return None


def document_chunk_heads(data: bytes) -> list[bytes]:
    """Check a saved document: a document chunk, then any change chunks `Document.save()`
    appends for changes still waiting for a dependency. Returns the document chunk's heads."""
    leading, *queued = split_chunks(data) or [b""]
    for change in queued:
        try:
            change_hash_and_deps(change)
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
    chunk = _parse_chunk(leading)
    if chunk.chunk_type != _DOCUMENT_CHUNK:
        raise ValueError(f"chunk type {chunk.chunk_type} is not a document")
    if chunk_hash(_DOCUMENT_CHUNK, chunk.body)[:4] != chunk.checksum:
        raise ValueError("checksum mismatch")
    body = chunk.body
    actor_count, position = read_uleb128(body, 0)
    for _ in range(actor_count):
        actor_length, position = read_uleb128(body, position)
        position += actor_length
    head_count, position = read_uleb128(body, position)
    end = position + head_count * HEAD_SIZE
    if end > len(body):
        raise ValueError("truncated heads")
    return split_heads(body[position:end])
