"""Plain Python data in and out of Automerge documents.

Writes always go through `automerge.core` with an explicit `ScalarType` (the convenience
wrapper stores booleans as integers), and reads return plain dicts, lists and scalars.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from automerge.core import ROOT, Document, ObjType, ScalarType

from crdtmds.errors import ValidationError

__all__ = [
    "ROOT",
    "child_id",
    "hex_heads",
    "insert_value",
    "put_value",
    "read",
    "replace_list",
    "unhex_heads",
]


def _scalar_type(value: Any) -> ScalarType:
    # bool before int: bool is a subclass of int.
    if value is None:
        return ScalarType.Null
    if isinstance(value, bool):
        return ScalarType.Boolean
    if isinstance(value, int):
        return ScalarType.Int
    if isinstance(value, float):
        return ScalarType.F64
    if isinstance(value, str):
        return ScalarType.Str
    if isinstance(value, bytes):
        return ScalarType.Bytes
    raise ValidationError(f"cannot store a value of type {type(value).__name__}")


def put_value(tx: Any, obj: bytes, key: str, value: Any) -> None:
    """Store `value` (scalar, list or dict, nested) under `key` of the map `obj`."""
    if isinstance(value, Mapping):
        child = tx.put_object(obj, key, ObjType.Map)
        for k, v in value.items():
            put_value(tx, child, k, v)
    elif isinstance(value, list | tuple):
        child = tx.put_object(obj, key, ObjType.List)
        _fill_list(tx, child, value)
    else:
        tx.put(obj, key, _scalar_type(value), value)


def insert_value(tx: Any, obj: bytes, index: int, value: Any) -> None:
    """Insert `value` at `index` of the list `obj`."""
    if isinstance(value, Mapping):
        child = tx.insert_object(obj, index, ObjType.Map)
        for k, v in value.items():
            put_value(tx, child, k, v)
    elif isinstance(value, list | tuple):
        child = tx.insert_object(obj, index, ObjType.List)
        _fill_list(tx, child, value)
    else:
        tx.insert(obj, index, _scalar_type(value), value)


def _fill_list(tx: Any, obj: bytes, values: Sequence[Any]) -> None:
    for i, v in enumerate(values):
        insert_value(tx, obj, i, v)


def replace_list(tx: Any, obj: bytes, key: str, values: Sequence[Any]) -> None:
    """Give the map `obj` a fresh list under `key` (a whole-field write: last writer wins)."""
    put_value(tx, obj, key, list(values))


def child_id(doc: Document | Any, parent: bytes, key: str | int) -> bytes | None:
    """The object id stored under `key` of `parent`, or None if absent or a scalar."""
    got = doc.get(parent, key)
    if got is None:
        return None
    value, obj_id = got
    if isinstance(value, ObjType):
        return obj_id
    return None


def read(doc: Document, obj: bytes = ROOT, heads: Sequence[bytes] | None = None) -> Any:
    """The whole object `obj` as plain Python data, now or as it was at `heads`.

    Reading at `heads` is how past states are read: `Document.fork_at` can panic inside
    the Automerge core on ordinary histories, and re-applies every change besides.
    """
    at = None if heads is None else list(heads)
    return _read_object(doc, obj, doc.object_type(obj), at)


def _read_object(doc: Document, obj: bytes, obj_type: ObjType, heads: list[bytes] | None) -> Any:
    # One `values` call per object (plus `keys` for a map) rather than one `get` per
    # entry: about twice as fast as the package's `extract` on domain records.
    if obj_type == ObjType.Map:
        return {
            key: _plain(doc, value, child, heads)
            for key, (value, child) in zip(doc.keys(obj, heads), doc.values(obj, heads),
                                           strict=True)
        }  # fmt: skip
    if obj_type == ObjType.List:
        return [_plain(doc, value, child, heads) for value, child in doc.values(obj, heads)]
    return doc.text(obj, heads)


def _plain(doc: Document, value: Any, obj: bytes, heads: list[bytes] | None) -> Any:
    return _read_object(doc, obj, value, heads) if isinstance(value, ObjType) else value[1]


def hex_heads(heads: Sequence[bytes]) -> list[str]:
    """Heads as sorted hex strings: the form used in APIs, JSON and revision entries."""
    return sorted(h.hex() for h in heads)


def unhex_heads(heads: Sequence[str]) -> list[bytes]:
    try:
        return [bytes.fromhex(h) for h in heads]
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"invalid heads: {exc}") from None


def new_actor() -> bytes:
    """A fresh actor id that sorts after the ones made before it.

    Automerge keeps a document's actors sorted and numbers operations by their position:
    the first change of an actor that sorts before known ones renumbers every operation
    (milliseconds per 100,000 operations, on every server it reaches), while one that sorts
    last is appended. Leading with the clock keeps new sessions last.
    """
    global _last_actor_time
    _last_actor_time = max(time.time_ns(), _last_actor_time + 1)
    return _last_actor_time.to_bytes(8, "big") + os.urandom(8)


_last_actor_time = 0
"""Nanoseconds in the last actor id made: ids made by one process never tie or go back."""


def change_rows(doc: Document, since: Sequence[bytes] = ()) -> list[tuple[bytes, bytes]]:
    """(hash, bytes) of each change of `doc` after `since` (every change by default), as
    storage and gossip take them."""
    return [(change.hash, change.bytes) for change in doc.get_changes(list(since))]


def fork_with_actor(doc: Document, actor: bytes) -> Document:
    """A copy of `doc` that writes as `actor`."""
    fork = doc.fork()
    fork.set_actor(actor)
    return fork


def has_heads(doc: Document, heads: Sequence[bytes]) -> bool:
    """Whether `doc` holds every change named by `heads` (reads at unknown heads quietly
    return nothing, so past states are checked first).

    A head at which the root holds a key is known: one short read each. Only the others
    (an empty document's first change) are looked for in the list of every change,
    which Automerge re-encodes from the operations, holding the GIL for a time that
    grows with the history (0.1 s for 20,000 objects)."""
    unsure = {head for head in heads if not doc.keys(ROOT, [head])}
    if not unsure:
        return True
    return unsure <= {change.hash for change in doc.get_changes([])}


def rebuild_at(
    doc: Document, heads: Sequence[bytes], extra: Sequence[bytes] = (), actor: bytes | None = None
) -> Document:
    """A new document holding the changes of `doc` up to `heads`, then the change chunks
    `extra` (which must depend only on those), writing as `actor`.

    Built by loading the changes themselves rather than with `Document.fork_at`, which can
    panic inside the Automerge core on ordinary histories. Costs a load of the history.
    """
    if not has_heads(doc, heads):
        raise ValidationError("unknown heads")
    later = {change.hash for change in doc.get_changes(list(heads))}
    chunks = [change.bytes for change in doc.get_changes([]) if change.hash not in later]
    rebuilt = Document.load(b"".join([*chunks, *extra])) if chunks or extra else Document()
    if actor is not None:
        rebuilt.set_actor(actor)
    return rebuilt
