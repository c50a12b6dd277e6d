"""Plain reads of Automerge documents and the helpers that write plain values."""

from __future__ import annotations

from datetime import UTC, datetime

from automerge.core import ROOT, Document, ObjType, ScalarType, extract

from crdtmds.docdata import child_id, fork_with_actor, new_actor, read


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


def test_fork_with_actor_at_past_heads() -> None:
    doc = nested_document()
    past = doc.get_heads()
    with doc.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "later")
    actor = new_actor()
    fork = fork_with_actor(doc, actor, past)
    assert fork.get_actor() == actor
    assert fork.get_heads() == past
    assert read(fork)["name"] == "acme"
