"""Plain reads of Automerge documents and the helpers that write plain values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from automerge.core import ROOT, Document, ObjType, ScalarType, extract

from crdtmds.core.docdata import child_id, fork_with_actor, has_heads, new_actor, read, rebuild_at
from crdtmds.errors import ValidationError


def nested_document() -> Document:
    doc = Document()
    with doc.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "acme")
        tx.put(ROOT, "count", ScalarType.Int, -3)
        tx.put(ROOT, "ratio", ScalarType.F64, 0.5)
        tx.put(ROOT, "on", ScalarType.Boolean, True)
        tx.put(ROOT, "blob", ScalarType.Bytes, b"\x00\x01")
        tx.put(ROOT, "nothing", ScalarType.Null, None)
        tx.put(ROOT, "at", ScalarType.Timestamp, datetime(2026, 1, 2, tzinfo=UTC))
        objects = tx.put_object(ROOT, "objects", ObjType.Map)
        host = tx.put_object(objects, "h1", ObjType.Map)
        tx.put(host, "name", ScalarType.Str, "web")
        tags = tx.put_object(host, "tags", ObjType.List)
        tx.insert(tags, 0, ScalarType.Str, "a")
        inner = tx.insert_object(tags, 1, ObjType.Map)
        tx.put(inner, "k", ScalarType.Uint, 7)
        tx.put_object(objects, "empty", ObjType.Map)
        tx.put_object(ROOT, "empty-list", ObjType.List)
        note = tx.put_object(ROOT, "note", ObjType.Text)
        tx.insert(note, 0, ScalarType.Str, "h")
    return doc


def test_read_equals_the_packages_extract() -> None:
    doc = nested_document()
    assert read(doc) == extract(doc, ROOT)
    objects = child_id(doc, ROOT, "objects")
    assert objects is not None
    assert read(doc, objects) == {
        "h1": {"name": "web", "tags": ["a", {"k": 7}]},
        "empty": {},
    }


def test_new_actors_sort_in_the_order_they_are_made() -> None:
    actors = [new_actor() for _ in range(50)]
    assert actors == sorted(actors)
    assert len(set(actors)) == 50


def test_rebuild_at_past_heads_writes_as_the_given_actor() -> None:
    doc = nested_document()
    past = doc.get_heads()
    with doc.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "later")
    actor = new_actor()
    rebuilt = rebuild_at(doc, past, actor=actor)
    assert rebuilt.get_actor() == actor
    assert rebuilt.get_heads() == past
    assert read(rebuilt)["name"] == "acme"
    with rebuilt.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "branch")
    assert read(rebuilt)["name"] == "branch"
    assert read(doc)["name"] == "later"


def test_rebuild_at_adds_changes_built_on_those_heads() -> None:
    doc = nested_document()
    past = doc.get_heads()
    draft = fork_with_actor(doc, new_actor())
    with draft.transaction() as tx:
        tx.put(ROOT, "count", ScalarType.Int, 9)
    change = draft.get_last_local_change()
    with doc.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "later")
    rebuilt = rebuild_at(doc, past, [change.bytes])
    assert rebuilt.get_heads() == draft.get_heads()
    assert read(rebuilt) == read(draft)


def test_rebuild_at_unknown_heads_is_refused() -> None:
    with pytest.raises(ValidationError):
        rebuild_at(nested_document(), [b"\x01" * 32])


def test_read_at_past_heads_sees_the_past() -> None:
    doc = nested_document()
    past = doc.get_heads()
    before = read(doc)
    with doc.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "later")
        tx.delete(ROOT, "count")
        objects = child_id(tx, ROOT, "objects")
        tx.delete(objects, "h1")
    assert read(doc, ROOT, past) == before
    assert read(doc)["name"] == "later"
    assert has_heads(doc, past)
    assert not has_heads(doc, [b"\x02" * 32])
