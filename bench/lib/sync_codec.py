"""Reading and writing automerge sync messages and change chunks, for peers that keep
only a change graph: the codec is the servers' own (`crdtmds.sync.gossip`,
`crdtmds.core.changes`), with its errors as ValueError.

The automerge sync message (automerge's sync.rs), v1 (0x42) and v2 (0x43) alike:

    type byte      0x42 (v1) or 0x43 (v2)
    heads, need    uleb128 count, 32-byte hashes each (sorted)
    have           uleb128 count of (last-sync hashes, uleb128-prefixed bloom filter)
    changes        uleb128 count of uleb128-prefixed entries; the receiver loads them
                   concatenated, so an entry is one or more chunks: change chunks
                   (plain or deflated) or, in v2, a whole saved document
    capabilities   optional: uleb128 count of bytes (0x01 v1, 0x02 v2)

A peer sends the changes after `have`'s last sync that its bloom filter does not hold
(an empty filter holds none), less those it already sent on this connection, so an
answer whose heads and last sync are exactly what the observer holds gets each new
change once. Advertising no capability keeps the peer on v1 change lists: v2 peers may
send a whole document instead when more than a third of the document is new.
"""

from __future__ import annotations

from collections.abc import Sequence

from crdtmds.core.changes import change_hash_and_deps as checked_hash_and_deps
from crdtmds.core.changes import split_chunks
from crdtmds.errors import ProtocolError
from crdtmds.sync.sync_message import SyncMessage
from crdtmds.sync.sync_message import encode_sync_message as encode_any_sync_message
from crdtmds.sync.sync_message import parse_sync_message as parse_any_sync_message

__all__ = [
    "SyncMessage",
    "change_hash_and_deps",
    "document_changes",
    "encode_sync_message",
    "parse_sync_message",
    "sync_message_changes",
]

_DOCUMENT_CHUNK = 0


def parse_sync_message(data: bytes) -> SyncMessage:
    """The fields of an encoded automerge sync message, nothing after them; ValueError if
    it is not one."""
    try:
        return parse_any_sync_message(data, exact=True)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None


def encode_sync_message(
    heads: Sequence[bytes],
    need: Sequence[bytes] = (),
    have: Sequence[Sequence[bytes]] = (),
    changes: Sequence[bytes] = (),
) -> bytes:
    """A v1 sync message without capabilities; each `have` entry is a last-sync set sent
    with an empty bloom filter (it holds nothing), each of `changes` one change chunk."""
    message = SyncMessage(
        heads=sorted(heads),
        need=sorted(need),
        have=[(sorted(last_sync), b"") for last_sync in have],
        changes=list(changes),
    )
    return encode_any_sync_message(message)


def change_hash_and_deps(chunk: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """The hash and the dependencies of one change chunk (plain or deflated).

    The hash is the SHA-256 of the uncompressed chunk's type, length and body; the body
    starts with the dependencies. ValueError if the chunk is malformed.
    """
    try:
        return checked_hash_and_deps(chunk)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None


def sync_message_changes(message: SyncMessage) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """(hash, deps) of every change a sync message carries, in the order it carries them."""
    found = []
    for entry in message.changes:
        for chunk in split_chunks(entry):
            if chunk[8] == _DOCUMENT_CHUNK:
                found += document_changes(chunk)
            else:
                found.append(change_hash_and_deps(chunk))
    return found


def document_changes(chunk: bytes) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """(hash, deps) of every change of a saved document chunk, in causal order.

    Only a v2 peer sends one, so this rare path lets the core rebuild the changes.
    """
    from automerge.core import Document

    try:
        changes = Document.load(chunk).get_changes([])
    except Exception as exc:  # the binding raises a plain Exception on bad input
        raise ValueError(f"invalid document chunk: {exc}") from None
    return [(change.hash, tuple(change.deps)) for change in changes]
