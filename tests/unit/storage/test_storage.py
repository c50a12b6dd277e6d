"""Tests of crdtmds.storage.

The first part is a conformance suite: every test takes the ``reopen`` fixture, which opens
(or reopens) one backend at one location, so a future backend only has to add itself to
``BACKENDS``. The second part checks what is particular to the SQLite file: damaged rows,
schema versions, a full disk, file permissions and durability across SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import automerge.core as am
import pytest

from crdtmds.errors import StorageCorruption, StorageError, StorageVersionError
from crdtmds.storage import (
    DEFAULT_COMPACT_THRESHOLD,
    SCHEMA_VERSION,
    LoadProblem,
    SessionRecord,
    Storage,
)
from crdtmds.storage.document_reader import DocumentReader

Opener = Callable[[], Awaitable[Storage]]
ChangePair = tuple[bytes, bytes]

REPO_ROOT = Path(__file__).resolve().parents[3]
DB_NAME = "node.db"


def sqlite_opener(directory: Path) -> Opener:
    return lambda: Storage.open(directory / DB_NAME)


BACKENDS: dict[str, Callable[[Path], Opener]] = {"sqlite": sqlite_opener}


@pytest.fixture(params=sorted(BACKENDS))
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the backend under test at one location; call again after close to reopen."""
    return BACKENDS[request.param](tmp_path / "store")


@pytest.fixture
async def storage(reopen: Opener) -> AsyncIterator[Storage]:
    opened = await reopen()
    yield opened
    await opened.close()


# -- helpers ---------------------------------------------------------------------------------


def edit(doc: am.Document, key: str, value: str) -> ChangePair:
    """Commit one change setting ``key`` at the root; return its (hash, bytes)."""
    with doc.transaction() as tx:
        tx.put(am.ROOT, key, am.ScalarType.Str, value)
    change = doc.get_last_local_change()
    return change.hash, change.bytes


def edits(doc: am.Document, count: int, prefix: str = "k") -> list[ChangePair]:
    return [edit(doc, f"{prefix}{i % 50}", f"{prefix}-value-{i}") for i in range(count)]


def structured_doc() -> tuple[am.Document, list[ChangePair]]:
    """A document with nested maps, a list and text, built from several changes."""
    doc = am.Document()
    pairs = []
    with doc.transaction() as tx:
        objects = tx.put_object(am.ROOT, "objects", am.ObjType.Map)
        host = tx.put_object(objects, "h1", am.ObjType.Map)
        tx.put(host, "ipv4-address", am.ScalarType.Str, "10.0.0.1")
        tx.put(host, "enabled", am.ScalarType.Boolean, True)
        order = tx.put_object(am.ROOT, "order", am.ObjType.List)
        tx.insert(order, 0, am.ScalarType.Str, "r1")
    change = doc.get_last_local_change()
    pairs.append((change.hash, change.bytes))
    pairs.extend(edits(doc, 20))
    return doc, pairs


def content(doc: am.Document) -> Any:
    return am.extract(doc, am.ROOT)


def assert_same_document(loaded: am.Document | None, expected: am.Document) -> None:
    assert loaded is not None
    assert loaded.get_heads() == expected.get_heads()
    assert content(loaded) == content(expected)


def session_record(uid: str, created_at: float, **overrides: Any) -> SessionRecord:
    fields: dict[str, Any] = {
        "uid": uid,
        "document_id": "doc-" + uid,
        "domain": "Domain " + uid,
        "admin": "alice",
        "name": "session " + uid,
        "description": "draft of " + uid,
        "base_heads": [bytes([1]) * 32, bytes([2]) * 32],
        "actor": bytes(range(16)),
        "created_at": created_at,
        "last_active": created_at + 1.5,
    }
    fields.update(overrides)
    return SessionRecord(**fields)


# -- conformance: documents ------------------------------------------------------------------


async def test_round_trip_after_reopen(reopen: Opener) -> None:
    doc, pairs = structured_doc()
    other = am.Document()
    other_pairs = edits(other, 5, "o")
    storage = await reopen()
    await storage.append_changes("doc-a", pairs[:7])
    await storage.append_changes("doc-a", pairs[7:])
    await storage.append_changes("doc-b", other_pairs)
    await storage.close()

    storage = await reopen()
    try:
        assert await storage.document_ids() == ["doc-a", "doc-b"]
        assert_same_document(await storage.load_document("doc-a"), doc)
        loaded = await storage.load_all()
        assert loaded.problems == []
        assert sorted(loaded.documents) == ["doc-a", "doc-b"]
        assert_same_document(loaded.documents["doc-a"], doc)
        assert_same_document(loaded.documents["doc-b"], other)
        assert content(loaded.documents["doc-a"])["objects"]["h1"]["enabled"] is True
    finally:
        await storage.close()


async def test_unknown_document_loads_as_none(storage: Storage) -> None:
    assert await storage.load_document("missing") is None
    assert await storage.document_ids() == []
    assert await storage.uncompacted_count("missing") == 0
    loaded = await storage.load_all()
    assert (loaded.documents, loaded.problems) == ({}, [])


async def test_duplicates_are_ignored(storage: Storage) -> None:
    doc = am.Document()
    pairs = edits(doc, 10)
    assert await storage.append_changes("doc", pairs[:6]) == 6
    assert await storage.append_changes("doc", pairs) == 10
    assert await storage.append_changes("doc", pairs[3:] + pairs[3:]) == 10
    assert await storage.append_changes("doc", []) == 10
    assert_same_document(await storage.load_document("doc"), doc)


async def test_a_batch_longer_than_one_statement_is_stored_whole(reopen: Opener) -> None:
    # More rows than one INSERT takes, first as the opening write (rows not yet
    # counted), then again on top with duplicates mixed in.
    doc = am.Document()
    pairs = edits(doc, 2600)
    storage = await reopen()
    assert await storage.append_changes("doc", pairs[:1200]) == 1200
    assert await storage.append_changes("doc", pairs[1100:]) == 2600
    await storage.close()
    storage = await reopen()
    try:
        assert await storage.uncompacted_count("doc") == 2600
        assert_same_document(await storage.load_document("doc"), doc)
    finally:
        await storage.close()


async def test_same_change_in_two_documents_is_stored_for_each(storage: Storage) -> None:
    doc = am.Document()
    pairs = edits(doc, 3)
    await storage.append_changes("one", pairs)
    assert await storage.append_changes("two", pairs) == 3
    assert await storage.uncompacted_count("one") == 3


async def test_append_returns_the_count_that_triggers_compaction(storage: Storage) -> None:
    doc = am.Document()
    pairs = edits(doc, DEFAULT_COMPACT_THRESHOLD + 10)
    batch = 250
    counts = [
        await storage.append_changes("doc", pairs[start : start + batch])
        for start in range(0, len(pairs), batch)
    ]
    assert counts == [250, 500, 750, 1000, 1010]
    assert counts[-1] >= DEFAULT_COMPACT_THRESHOLD
    assert await storage.uncompacted_count("doc") == 1010
    assert await storage.append_changes("other", pairs[:1]) == 1


async def test_twenty_thousand_changes_in_one_call(storage: Storage) -> None:
    doc = am.Document()
    pairs = edits(doc, 20_000)
    assert await storage.append_changes("big", pairs) == 20_000
    assert_same_document(await storage.load_document("big"), doc)


async def test_compaction_keeps_content_heads_and_uncovered_changes(reopen: Opener) -> None:
    doc, pairs = structured_doc()
    storage = await reopen()
    await storage.append_changes("doc", pairs)
    snapshot = doc.save()
    covered = [change_hash for change_hash, _ in pairs]
    # Changes made after the snapshot was taken, stored before the compaction commits.
    late = edits(doc, 4, "late")
    assert await storage.append_changes("doc", late) == len(pairs) + 4

    await storage.save_snapshot("doc", snapshot, covered)
    assert await storage.uncompacted_count("doc") == 4
    assert_same_document(await storage.load_document("doc"), doc)
    await storage.close()

    storage = await reopen()
    try:
        assert await storage.document_ids() == ["doc"]
        loaded = await storage.load_all()
        assert loaded.problems == []
        assert_same_document(loaded.documents["doc"], doc)
    finally:
        await storage.close()


async def test_append_counts_rows_through_duplicates_and_compactions(storage: Storage) -> None:
    doc = am.Document()
    first = edits(doc, 5)
    assert await storage.append_changes("doc", first) == 5
    second = edits(doc, 2, "second")
    assert await storage.append_changes("doc", first[:3] + second) == 7  # repeats ignored
    await storage.save_snapshot("doc", doc.save(), [h for h, _ in first])
    third = edits(doc, 1, "third")
    assert await storage.append_changes("doc", third + second) == 3
    assert await storage.uncompacted_count("doc") == 3
    assert await storage.append_changes("other", edits(am.Document(), 2)) == 2


async def test_compaction_racing_an_append_loses_nothing(storage: Storage) -> None:
    doc = am.Document()
    pairs = edits(doc, 300)
    await storage.append_changes("doc", pairs)
    snapshot, covered = doc.save(), [h for h, _ in pairs]
    late = edits(doc, 50, "late")
    appends = [storage.append_changes("doc", late[i : i + 5]) for i in range(0, 50, 5)]
    await asyncio.gather(storage.save_snapshot("doc", snapshot, covered), *appends)
    assert await storage.uncompacted_count("doc") == 50
    assert_same_document(await storage.load_document("doc"), doc)


async def test_repeated_compaction_keeps_only_the_latest_snapshot(storage: Storage) -> None:
    doc = am.Document()
    first = edits(doc, 20)
    await storage.append_changes("doc", first)
    await storage.save_snapshot("doc", doc.save(), [h for h, _ in first])
    second = edits(doc, 20, "second")
    await storage.append_changes("doc", second)
    await storage.save_snapshot("doc", doc.save(), [h for h, _ in second])
    assert await storage.uncompacted_count("doc") == 0
    assert await storage.document_ids() == ["doc"]
    assert_same_document(await storage.load_document("doc"), doc)
    assert_same_document((await storage.load_all()).documents["doc"], doc)


async def test_snapshot_that_is_not_a_document_is_refused(storage: Storage) -> None:
    doc = am.Document()
    pairs = edits(doc, 5)
    await storage.append_changes("doc", pairs)
    for bad in (b"garbage", doc.save()[:-3], pairs[0][1]):
        with pytest.raises(StorageError):
            await storage.save_snapshot("doc", bad, [h for h, _ in pairs])
    assert await storage.uncompacted_count("doc") == 5
    assert_same_document(await storage.load_document("doc"), doc)


async def test_closed_storage_raises(reopen: Opener) -> None:
    storage = await reopen()
    await storage.close()
    await storage.close()
    with pytest.raises(StorageError):
        await storage.load_all()
    with pytest.raises(StorageError):
        await storage.append_changes("doc", edits(am.Document(), 1))


# -- conformance: sessions and meta ----------------------------------------------------------


async def test_sessions_round_trip_after_reopen(reopen: Opener) -> None:
    fork = am.Document()
    chunks = [data for _, data in edits(fork, 12)]
    first = session_record("s1", 100.0)
    second = session_record("s2", 50.0, description="", base_heads=[])
    storage = await reopen()
    await storage.save_session(first)
    await storage.save_session(second)
    await storage.append_session_changes("s1", chunks[:5])
    await storage.append_session_changes("s1", chunks[5:])
    await storage.append_session_changes("s1", [])
    await storage.close()

    storage = await reopen()
    try:
        records = await storage.load_sessions()
        first.changes = chunks
        assert records == [second, first]
        restored = am.Document.load(b"".join(records[1].changes))
        assert restored.get_heads() == fork.get_heads()
    finally:
        await storage.close()


async def test_save_session_updates_metadata_and_keeps_changes(storage: Storage) -> None:
    await storage.save_session(session_record("s1", 10.0))
    await storage.append_session_changes("s1", [b"one", b"two"])
    updated = session_record("s1", 10.0, name="renamed", last_active=99.0)
    await storage.save_session(updated)
    (record,) = await storage.load_sessions()
    assert record.name == "renamed"
    assert record.last_active == 99.0
    assert record.changes == [b"one", b"two"]


async def test_replace_and_delete_sessions(storage: Storage) -> None:
    await storage.save_session(session_record("s1", 10.0))
    await storage.save_session(session_record("s2", 20.0))
    await storage.append_session_changes("s1", [b"a", b"b", b"c"])
    await storage.append_session_changes("s2", [b"x"])
    new_heads = [bytes([9]) * 32]
    await storage.replace_session_changes("s1", new_heads, [b"d"])
    await storage.append_session_changes("s1", [b"e"])
    await storage.append_session_changes("s1", [], last_active=123.25)
    s1, s2 = await storage.load_sessions()
    assert (s1.base_heads, s1.changes, s1.last_active) == (new_heads, [b"d", b"e"], 123.25)
    assert s2.changes == [b"x"]

    await storage.replace_session_changes("s1", [], [])
    await storage.delete_session("s2")
    await storage.delete_session("s2")
    (s1,) = await storage.load_sessions()
    assert (s1.uid, s1.base_heads, s1.changes) == ("s1", [], [])


async def test_session_edits_move_the_base_of_an_empty_draft_in_the_same_write(
    storage: Storage,
) -> None:
    await storage.save_session(session_record("s1", 10.0))
    moved = [bytes([7]) * 32]
    await storage.append_session_changes("s1", [b"a"], base_heads=moved, last_active=50.5)
    await storage.append_session_changes("s1", [b"b"], base_heads=moved, last_active=60.0)
    (s1,) = await storage.load_sessions()
    assert (s1.base_heads, s1.changes, s1.last_active) == (moved, [b"a", b"b"], 60.0)
    # Stored changes are based on the stored heads: moving those would orphan them.
    with pytest.raises(StorageError, match="base heads cannot move"):
        await storage.append_session_changes("s1", [b"c"], base_heads=[bytes([8]) * 32])
    (s1,) = await storage.load_sessions()
    assert (s1.base_heads, s1.changes) == (moved, [b"a", b"b"])


async def test_publish_changes_stores_the_changes_and_empties_the_draft_at_once(
    storage: Storage,
) -> None:
    await storage.save_session(session_record("s1", 10.0))
    await storage.append_session_changes("s1", [b"draft"])
    published = [bytes([5]) * 32]
    count = await storage.publish_changes(
        "doc-1",
        [(bytes([1]) * 32, b"change-1"), (bytes([2]) * 32, b"change-2")],
        session_uid="s1",
        base_heads=published,
        last_active=70.0,
        revision=("rev-1", bytes([2]) * 32),
    )
    assert count == 2
    (s1,) = await storage.load_sessions()
    assert (s1.base_heads, s1.changes, s1.last_active) == (published, [], 70.0)
    assert await storage.revisions.changes_of("doc-1") == {"rev-1": bytes([2]) * 32}
    # A publish for a session that is not stored changes nothing.
    with pytest.raises(StorageError):
        await storage.publish_changes(
            "doc-1", [(bytes([3]) * 32, b"change-3")], session_uid="nobody",
            base_heads=published, last_active=1.0, revision=("rev-2", bytes([3]) * 32),
        )  # fmt: skip
    assert await storage.uncompacted_count("doc-1") == 2
    assert "rev-2" not in await storage.revisions.changes_of("doc-1")
    assert await storage.delete_document("doc-1") == 2
    assert await storage.revisions.changes_of("doc-1") == {}  # gone with it


async def test_changes_of_unknown_session_are_refused(storage: Storage) -> None:
    with pytest.raises(StorageError):
        await storage.append_session_changes("nobody", [b"a"])
    with pytest.raises(StorageError):
        await storage.replace_session_changes("nobody", [], [b"a"])
    assert await storage.load_sessions() == []


async def test_deleted_session_leaves_no_changes_behind(storage: Storage) -> None:
    await storage.save_session(session_record("s1", 10.0))
    await storage.append_session_changes("s1", [b"old"])
    await storage.delete_session("s1")
    await storage.save_session(session_record("s1", 11.0))
    (record,) = await storage.load_sessions()
    assert record.changes == []


async def test_meta_round_trip_after_reopen(reopen: Opener) -> None:
    values = {
        "cluster": {"id": "c-1", "servers": ["a", "b"], "primary": True},
        "count": 3,
        "name": "node-1",
        "ratio": 0.5,
        "list": [1, "two", None],
    }
    storage = await reopen()
    for key, value in values.items():
        await storage.set_meta(key, value)
    await storage.set_meta("count", 4)
    await storage.close()

    storage = await reopen()
    try:
        assert await storage.get_meta("missing") is None
        assert await storage.get_meta("count") == 4
        for key in ("cluster", "name", "ratio", "list"):
            assert await storage.get_meta(key) == values[key]
    finally:
        await storage.close()


# -- SQLite: damaged rows --------------------------------------------------------------------


def raw_sqlite(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> list[list[Any]]:
    """Run statements on the file directly, as damage from outside crdtmds would."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            return [connection.execute(sql, args).fetchall() for sql, args in statements]
    finally:
        connection.close()


async def stored_pair(path: Path, compact: bool = True) -> tuple[am.Document, am.Document]:
    """'bad' (a snapshot unless not ``compact``, then changes) and 'good' stored at ``path``;
    the store is left closed."""
    bad, good = am.Document(), am.Document()
    bad_pairs = edits(bad, 10, "bad")
    storage = await Storage.open(path)
    await storage.append_changes("bad", bad_pairs)
    if compact:
        await storage.save_snapshot("bad", bad.save(), [h for h, _ in bad_pairs])
    await storage.append_changes("bad", edits(bad, 10, "after"))
    await storage.append_changes("good", edits(good, 10, "good"))
    await storage.close()
    return bad, good


def damage(data: bytes, how: str) -> bytes:
    return b"\x00garbage\xff" * 3 if how == "garbage" else data[: len(data) // 2]


async def load_with_damage(path: Path, good: am.Document) -> list[LoadProblem]:
    """Load everything at ``path``: 'good' must load, 'bad' must be reported, not loaded."""
    storage = await Storage.open(path)
    try:
        loaded = await storage.load_all()
        assert list(loaded.documents) == ["good"]
        assert_same_document(loaded.documents["good"], good)
        assert loaded.problems
        assert {problem.document_id for problem in loaded.problems} == {"bad"}
        with pytest.raises(StorageCorruption) as raised:
            await storage.load_document("bad")
        first = loaded.problems[0]
        assert raised.value.code == "err_storage_corrupt"
        assert raised.value.details["document_id"] == "bad"
        assert (raised.value.details["table"], raised.value.details["row_id"]) == (
            first.table,
            first.row_id,
        )
        assert_same_document(await storage.load_document("good"), good)
        return loaded.problems
    finally:
        await storage.close()


@pytest.mark.parametrize("how", ["garbage", "truncated"])
async def test_damaged_snapshot_is_reported(tmp_path: Path, how: str) -> None:
    path = tmp_path / DB_NAME
    _, good = await stored_pair(path)
    [[(row_id, data)]] = raw_sqlite(
        path, ("SELECT id, data FROM snapshots WHERE document_id = 'bad'", ())
    )
    raw_sqlite(path, ("UPDATE snapshots SET data = ? WHERE id = ?", (damage(data, how), row_id)))
    problems = await load_with_damage(path, good)
    assert [(p.table, p.row_id) for p in problems] == [("snapshots", row_id)]
    assert "snapshot" in problems[0].message


@pytest.mark.parametrize("how", ["garbage", "truncated"])
async def test_damaged_change_row_is_reported(tmp_path: Path, how: str) -> None:
    path = tmp_path / DB_NAME
    _, good = await stored_pair(path)
    [rows] = raw_sqlite(
        path, ("SELECT id, data FROM changes WHERE document_id = 'bad' ORDER BY id", ())
    )
    row_id, data = rows[4]
    raw_sqlite(path, ("UPDATE changes SET data = ? WHERE id = ?", (damage(data, how), row_id)))
    problems = await load_with_damage(path, good)
    assert [(p.table, p.row_id) for p in problems] == [("changes", row_id)]
    assert "change chunk" in problems[0].message


async def test_missing_dependency_is_reported_for_the_document(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    _, good = await stored_pair(path, compact=False)
    [rows] = raw_sqlite(path, ("SELECT id FROM changes WHERE document_id = 'bad' ORDER BY id", ()))
    raw_sqlite(path, ("DELETE FROM changes WHERE id = ?", (rows[0][0],)))
    problems = await load_with_damage(path, good)
    assert [(p.table, p.row_id) for p in problems] == [("changes", None)]
    assert "deps" in problems[0].message


# -- SQLite: versions and foreign files ------------------------------------------------------


async def test_new_file_carries_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    await (await Storage.open(path)).close()
    [[(version,)], [(mode,)]] = raw_sqlite(
        path, ("PRAGMA user_version", ()), ("PRAGMA journal_mode", ())
    )
    assert (version, mode) == (SCHEMA_VERSION, "wal")


async def test_compaction_leaves_one_snapshot_row_with_its_heads(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    doc = am.Document()
    storage = await Storage.open(path)
    for round_number in range(3):
        concurrent = doc.fork()
        pairs = edits(doc, 5, f"r{round_number}") + edits(concurrent, 3, f"c{round_number}")
        doc.merge(concurrent)
        await storage.append_changes("doc", pairs)
        await storage.save_snapshot("doc", doc.save(), [h for h, _ in pairs])
    await storage.close()
    [rows] = raw_sqlite(path, ("SELECT document_id, heads FROM snapshots", ()))
    assert len(doc.get_heads()) == 2
    assert rows == [("doc", b"".join(doc.get_heads()))]


def bulk_edit(doc: am.Document, prefix: str, count: int = 200) -> ChangePair:
    """One change writing ``count`` keys: a change as big as its share of a saved document."""
    with doc.transaction() as tx:
        for i in range(count):
            tx.put(am.ROOT, f"{prefix}{i}", am.ScalarType.Str, f"{prefix}-value-{i}")
    change = doc.get_last_local_change()
    return change.hash, change.bytes


def stored_snapshot(path: Path) -> bytes:
    [[(data,)]] = raw_sqlite(path, ("SELECT data FROM snapshots", ()))
    return bytes(data)


async def test_compaction_keeps_big_changes_as_their_log(tmp_path: Path) -> None:
    """A log about the size of the saved document is what is kept: a document loaded from
    its changes edits as fast as one built in memory, a loaded saved document does not."""
    path = tmp_path / DB_NAME
    doc = am.Document()
    storage = await Storage.open(path)
    expected = b""
    for round_number in range(2):
        pairs = [bulk_edit(doc, f"r{round_number}c{i}") for i in range(3)]
        await storage.append_changes("doc", pairs)
        await storage.save_snapshot("doc", doc.save(), [h for h, _ in pairs])
        expected += b"".join(data for _, data in pairs)
        assert stored_snapshot(path) == expected  # the earlier log, then the new rows
    late = [bulk_edit(doc, "late")]
    await storage.append_changes("doc", late)
    await storage.close()
    storage = await Storage.open(path)
    try:
        loaded = await storage.load_all()
        assert loaded.problems == []
        assert_same_document(loaded.documents["doc"], doc)
        assert await storage.uncompacted_count("doc") == 1
    finally:
        await storage.close()
    reader = DocumentReader(path)  # the lazy load on first use reads the same rows
    try:
        lazily = reader.load("doc")
        assert lazily is not None
        assert_same_document(lazily[0], doc)
    finally:
        reader.close()
    [[(row_id,)]] = raw_sqlite(path, ("SELECT id FROM snapshots", ()))
    raw_sqlite(path, ("UPDATE snapshots SET data = ? WHERE id = ?", (expected[:-5], row_id)))
    storage = await Storage.open(path)
    try:
        (problem,) = (await storage.load_all()).problems
        assert (problem.table, problem.row_id) == ("snapshots", row_id)
    finally:
        await storage.close()


async def test_compaction_of_many_small_changes_keeps_the_saved_document(
    tmp_path: Path,
) -> None:
    path = tmp_path / DB_NAME
    doc = am.Document()
    storage = await Storage.open(path)
    pairs = edits(doc, 300)
    await storage.append_changes("doc", pairs)
    snapshot = doc.save()
    await storage.save_snapshot("doc", snapshot, [h for h, _ in pairs])
    assert stored_snapshot(path) == snapshot
    more = edits(doc, 300, "more")  # a saved document's changes cannot be rebuilt from rows
    await storage.append_changes("doc", more)
    await storage.save_snapshot("doc", doc.save(), [h for h, _ in more])
    assert stored_snapshot(path) == doc.save()
    assert_same_document(await storage.load_document("doc"), doc)
    await storage.close()


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    storage = await Storage.open(path)
    await storage.set_meta("node", "n1")
    await storage.close()
    raw_sqlite(path, (f"PRAGMA user_version = {SCHEMA_VERSION + 1}", ()))
    with pytest.raises(StorageVersionError) as raised:
        await Storage.open(path)
    assert raised.value.code == "err_storage_version"
    assert str(SCHEMA_VERSION + 1) in raised.value.message
    assert str(SCHEMA_VERSION) in raised.value.message.replace(str(SCHEMA_VERSION + 1), "")
    assert raw_sqlite(path, ("SELECT value FROM meta", ())) == [[('"n1"',)]]


async def test_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StorageError) as raised:
        await Storage.open(path)
    assert not isinstance(raised.value, StorageVersionError)
    assert raised.value.code == "err_storage"


# -- SQLite: full disk -----------------------------------------------------------------------


async def limit_growth(storage: Storage) -> None:
    """Cap the file at its current page count, as a full disk would."""
    connection = storage._database._connection
    assert connection is not None
    await connection.execute("PRAGMA max_page_count = 1")


async def lift_limit(storage: Storage) -> None:
    connection = storage._database._connection
    assert connection is not None
    await connection.execute("PRAGMA max_page_count = 1073741823")


async def test_full_disk_raises_and_keeps_prior_data(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    doc = am.Document()
    prior = edits(doc, 50)
    storage = await Storage.open(path)
    await storage.append_changes("doc", prior)
    await storage.save_session(session_record("s1", 1.0))
    await storage.append_session_changes("s1", [b"kept-1", b"kept-2"])
    await limit_growth(storage)

    later = am.Document.load(doc.save())
    bulky = [edit(later, f"big{i}", os.urandom(1000).hex()) for i in range(200)]
    with pytest.raises(StorageError) as raised:
        await storage.append_changes("doc", bulky)
    assert "full" in raised.value.message
    with pytest.raises(StorageError, match="full"):
        await storage.replace_session_changes("s1", [], [b"y" * 4000] * 100)
    with pytest.raises(StorageError, match="full"):
        await storage.save_snapshot("doc", later.save(), [h for h, _ in prior])

    assert await storage.uncompacted_count("doc") == 50
    assert_same_document(await storage.load_document("doc"), doc)
    (session,) = await storage.load_sessions()
    assert session.changes == [b"kept-1", b"kept-2"]
    assert session.base_heads == session_record("s1", 1.0).base_heads

    await lift_limit(storage)
    assert await storage.append_changes("doc", bulky) == 250
    await storage.close()
    storage = await Storage.open(path)
    try:
        assert_same_document(await storage.load_document("doc"), later)
    finally:
        await storage.close()


# -- SQLite: permissions and durability ------------------------------------------------------


async def test_new_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "node"
    path = directory / DB_NAME
    storage = await Storage.open(path)
    try:
        await storage.append_changes("doc", edits(am.Document(), 3))
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    finally:
        await storage.close()


CRASHING_WRITER = """
import asyncio, sys
import automerge.core as am
from crdtmds.storage import Storage

async def main():
    storage = await Storage.open(sys.argv[1])
    doc = am.Document()
    pairs = []
    for i in range(300):
        with doc.transaction() as tx:
            tx.put(am.ROOT, f"k{i % 40}", am.ScalarType.Int, i)
        change = doc.get_last_local_change()
        pairs.append((change.hash, change.bytes))
    await storage.append_changes("doc", pairs[:100])
    await storage.append_changes("doc", pairs[100:])
    print(" ".join(head.hex() for head in doc.get_heads()))
    print("OK", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_appended_changes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        heads_line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        ok_line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert ok_line == b"OK\n"
        process.send_signal(signal.SIGKILL)
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), timeout=30)
    assert process.returncode == -signal.SIGKILL

    expected_heads = [bytes.fromhex(head) for head in heads_line.decode().split()]
    storage = await Storage.open(path)
    try:
        doc = await storage.load_document("doc")
        assert doc is not None
        assert doc.get_heads() == expected_heads
        assert content(doc)["k19"] == 299
        assert await storage.uncompacted_count("doc") == 300
    finally:
        await storage.close()
