"""`Storage`: what a server keeps durably, in its SQLite file (`crdtmds.storage.database`).

Every Automerge document is an append-only log of change chunks (``changes``, keyed by
``(document_id, change hash)``) plus at most one snapshot (``snapshots``) written by
compaction; a document loads in one ``Document.load`` of the snapshot followed by its
change rows. Administrator sessions are kept with their draft's edits
(`crdtmds.storage.sessions`), server metadata as JSON values (``meta``).

Compaction is the caller's decision: `Storage.append_changes` returns how many change rows
a document has outside its snapshot; past `DEFAULT_COMPACT_THRESHOLD` the caller saves the
document and hands the snapshot and the hashes it covers to `Storage.save_snapshot`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import aiosqlite
import automerge.core

from crdtmds.errors import StorageCorruption, StorageError
from crdtmds.storage.database import Database
from crdtmds.storage.document_chunk import (
    document_chunk_heads,
    is_change_log,
    join_heads,
    split_heads,
)
from crdtmds.storage.heads_records import HeadsRecords, delete_heads_of
from crdtmds.storage.loading import (
    DocumentRows,
    LoadedDocuments,
    LoadProblem,
    changes_left_out,
    chunks_by_document,
    corruption_error,
    diagnose,
)
from crdtmds.storage.sessions import (
    UPSERT_SESSION,
    SessionRecord,
    rebase_session,
    require_session,
    session_from_row,
    update_draft_metadata,
)

DEFAULT_COMPACT_THRESHOLD = 1000
LOG_FORM_GROWTH = 1.5
"""Largest size of a document's change log, relative to its saved form, that compaction
keeps as the snapshot instead: Automerge edits a document loaded from a saved document
far more slowly than one loaded from its changes (bench/snapshot_load.py), and a log of
big changes costs about as much to store and load as the saved form."""

# Change rows are read in insertion order: Automerge loads changes that arrive after their
# dependencies far faster than a shuffled log.
_SELECT_LATEST_SNAPSHOTS = """
SELECT s.document_id, s.data, s.heads FROM snapshots AS s
 WHERE s.id = (SELECT max(id) FROM snapshots WHERE document_id = s.document_id)
"""
_SELECT_ALL_CHANGES = "SELECT document_id, data, hash FROM changes ORDER BY id"


class Storage:
    """The SQLite store of one server. Create it with `await Storage.open(path)`."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._change_rows: dict[str, int] = {}
        """Change rows per document, once counted (see `_append_changes`)."""
        self.path = database.path
        self.heads = HeadsRecords(database)  # heads known without loading documents

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Storage:
        """Open (creating if needed) the store at ``path``; see `Database.open`."""
        return cls(await Database.open(path))

    async def close(self) -> None:
        """Close the connection; further calls raise `StorageError`. Closing twice is fine."""
        await self._database.close()

    async def check_writable(self) -> None:
        """Raise `StorageError` unless this process can write the store."""
        await self._database.check_writable()

    # -- documents -------------------------------------------------------------------------

    async def append_changes(self, document_id: str, changes: Sequence[tuple[bytes, bytes]]) -> int:
        """Store ``(change hash, change bytes)`` pairs of a document, durably, in one transaction.

        Pairs already stored for this document are ignored. Returns the number of change rows
        of the document not yet covered by a snapshot; compact when it passes a threshold.
        """
        # One INSERT statement commits by itself: no BEGIN and COMMIT needed.
        one_statement = document_id in self._change_rows and len(changes) <= _ROWS_PER_STATEMENT
        async with self._database.write(
            f"append changes to {document_id}", statement=one_statement
        ) as connection:
            count = await self._append_changes(connection, document_id, changes)
        self._change_rows[document_id] = count
        return count

    async def publish_changes(
        self,
        document_id: str,
        changes: Sequence[tuple[bytes, bytes]],
        *,
        session_uid: str,
        base_heads: list[bytes],
        last_active: float,
    ) -> int:
        """A session's publish in one transaction: its changes join the document's (as
        `append_changes`) and the saved session starts over, empty, from ``base_heads``
        (heads the published changes reach). Returns as `append_changes`."""
        async with self._database.write(f"publish to {document_id}") as connection:
            count = await self._append_changes(connection, document_id, changes)
            await rebase_session(connection, session_uid, base_heads, [], last_active)
        self._change_rows[document_id] = count
        return count

    async def _append_changes(
        self,
        connection: aiosqlite.Connection,
        document_id: str,
        changes: Sequence[tuple[bytes, bytes]],
    ) -> int:
        """Insert change rows; the document's row count after them. The count is kept in
        memory (set by the caller once committed): counting rows would cost a query more
        in every write."""
        inserted = 0
        for start in range(0, len(changes), _ROWS_PER_STATEMENT):
            rows = changes[start : start + _ROWS_PER_STATEMENT]
            cursor = await connection.execute(
                _insert_changes_sql(len(rows)), _change_params(document_id, rows)
            )
            inserted += max(cursor.rowcount, 0)
        known = self._change_rows.get(document_id)
        if known is None:
            return await _count_changes(connection, document_id)
        return known + inserted

    async def save_snapshot(
        self, document_id: str, snapshot: bytes, covered_hashes: Sequence[bytes]
    ) -> None:
        """Compact a document in one transaction: keep one snapshot row, drop older
        snapshots, and drop the change rows whose hash is in ``covered_hashes`` (rows not
        named, appended concurrently, are kept). ``snapshot`` is a ``Document.save()``
        (with the change chunks it appends for changes awaiting a dependency), which the
        caller vouches holds every covered change; the row kept is the change log instead
        when it is short enough (`LOG_FORM_GROWTH`). Raises `StorageError` if ``snapshot``
        is not a well-formed saved document, before touching anything.
        """
        try:
            heads = join_heads(document_chunk_heads(snapshot))
        except ValueError as exc:
            raise StorageError(f"snapshot of {document_id} is not a document: {exc}") from exc
        covered = set(covered_hashes)
        async with self._database.write(f"save snapshot of {document_id}") as connection:
            limit = LOG_FORM_GROWTH * len(snapshot)
            if (log := await _covered_log(connection, document_id, covered, limit)) is not None:
                snapshot, heads = log, b""  # a load of changes checks dependencies itself
            cursor = await connection.execute(
                "INSERT INTO snapshots (document_id, heads, data, created_at) VALUES (?, ?, ?, ?)",
                (document_id, heads, snapshot, time.time()),
            )
            await connection.execute(
                "DELETE FROM snapshots WHERE document_id = ? AND id < ?",
                (document_id, cursor.lastrowid),
            )
            await connection.executemany(
                "DELETE FROM changes WHERE document_id = ? AND hash = ?",
                [(document_id, change_hash) for change_hash in covered],
            )
        self._change_rows.pop(document_id, None)  # counted again at the next append

    async def load_document(self, document_id: str) -> automerge.core.Document | None:
        """The stored document, or None if nothing is stored under ``document_id``.

        Raises `StorageCorruption` naming the faulty table and row if it cannot be loaded.
        """
        stored = await self._document_rows(document_id)
        if stored is None:
            return None
        try:
            return automerge.core.Document.load(stored.concatenated())
        except Exception as exc:  # the binding raises a bare Exception for malformed input
            raise corruption_error(document_id, diagnose(document_id, stored, str(exc))) from exc

    async def load_all(self) -> LoadedDocuments:
        """Every stored document, each from one ``Document.load`` of its snapshot and changes.

        A document that fails to load is left out and described by `LoadProblem` entries
        naming the faulty rows; the other documents load regardless.
        """
        async with self._database.read("load all documents") as connection:
            snapshot_rows = await connection.execute_fetchall(_SELECT_LATEST_SNAPSHOTS)
            change_rows = await connection.execute_fetchall(_SELECT_ALL_CHANGES)
        snapshot_heads = _saved_snapshot_heads(snapshot_rows)
        change_hashes: dict[str, list[bytes]] = {}
        for document_id, _, change_hash in change_rows:
            change_hashes.setdefault(document_id, []).append(change_hash)
        chunks_of = chunks_by_document(
            [row[:2] for row in snapshot_rows], [row[:2] for row in change_rows]
        )
        result = LoadedDocuments(documents={}, problems=[])
        for document_id, chunks in chunks_of.items():
            try:
                doc = automerge.core.Document.load(b"".join(chunks))
            except Exception as exc:  # the binding raises a bare Exception for malformed input
                stored = await self._document_rows(document_id) or DocumentRows()
                result.problems.extend(diagnose(document_id, stored, str(exc)))
                continue
            left_out = changes_left_out(
                doc, snapshot_heads.get(document_id), change_hashes.get(document_id, [])
            )
            if left_out:
                message = f"{left_out} change rows do not load: a change they depend on is missing"
                result.problems.append(LoadProblem(document_id, "changes", None, message))
            else:
                result.documents[document_id] = doc
        return result

    async def document_ids(self) -> list[str]:
        """The ids of every stored document, sorted."""
        async with self._database.read("list documents") as connection:
            rows = await connection.execute_fetchall(
                "SELECT document_id FROM changes UNION SELECT document_id FROM snapshots ORDER BY 1"
            )
        return [document_id for (document_id,) in rows]

    async def delete_document(self, document_id: str) -> int:
        """Remove a document for good: its change rows, snapshots and stored drafts, in one
        transaction. Returns how many change and snapshot rows went (0: none stored)."""
        async with self._database.write(f"delete document {document_id}") as connection:
            removed = await _delete_document_rows(connection, document_id)
            await delete_heads_of(connection, document_id)
        self._change_rows.pop(document_id, None)
        return removed

    async def uncompacted_count(self, document_id: str) -> int:
        """How many change rows of the document no snapshot covers yet."""
        async with self._database.read(f"count changes of {document_id}") as connection:
            return await _count_changes(connection, document_id)

    # -- sessions --------------------------------------------------------------------------

    async def save_session(self, record: SessionRecord) -> None:
        """Insert or update a session's metadata; its changes are left as stored."""
        row = (
            record.uid,
            record.document_id,
            record.domain,
            record.admin,
            record.name,
            record.description,
            join_heads(record.base_heads),
            record.actor,
            record.created_at,
            record.last_active,
        )
        async with self._database.write(f"save session {record.uid}") as connection:
            await connection.execute(UPSERT_SESSION, row)

    async def append_session_changes(
        self,
        uid: str,
        changes: Sequence[bytes],
        *,
        base_heads: list[bytes] | None = None,
        last_active: float | None = None,
    ) -> None:
        """Append edits to a saved session's draft, after those already stored, in
        one transaction with its new ``base_heads`` (a draft that was empty may have been
        moved onto newer heads) and ``last_active``, when given."""
        async with self._database.write(f"append changes to session {uid}") as connection:
            if base_heads is None and last_active is None:
                await require_session(connection, uid)
            else:
                await update_draft_metadata(connection, uid, base_heads, last_active)
            # Each row's place is computed as it goes in: no query for the last one first.
            await connection.executemany(
                "INSERT INTO session_changes (session_uid, seq, data)"
                " SELECT ?, coalesce(max(seq) + 1, 0), ? FROM session_changes"
                " WHERE session_uid = ?",
                [(uid, data, uid) for data in changes],
            )

    async def replace_session_changes(
        self, uid: str, base_heads: list[bytes], changes: Sequence[bytes]
    ) -> None:
        """Rebase a saved session: new base heads and the draft's whole new edit list."""
        async with self._database.write(f"replace changes of session {uid}") as connection:
            await rebase_session(connection, uid, base_heads, changes)

    async def delete_session(self, uid: str) -> None:
        """Remove a session and its changes; deleting an unknown session is a no-op."""
        async with self._database.write(f"delete session {uid}") as connection:
            await connection.execute("DELETE FROM sessions WHERE uid = ?", (uid,))

    async def load_sessions(self) -> list[SessionRecord]:
        """Every stored session with its changes, oldest session first."""
        async with self._database.read("load sessions") as connection:
            session_rows = await connection.execute_fetchall(
                "SELECT uid, document_id, domain, admin, name, description, base_heads, actor,"
                " created_at, last_active FROM sessions ORDER BY created_at, uid"
            )
            change_rows = await connection.execute_fetchall(
                "SELECT session_uid, data FROM session_changes ORDER BY session_uid, seq"
            )
        changes: dict[str, list[bytes]] = {}
        for uid, data in change_rows:
            changes.setdefault(uid, []).append(data)
        return [session_from_row(row, changes.get(row[0], [])) for row in session_rows]

    # -- server metadata -------------------------------------------------------------------

    async def get_meta(self, key: str) -> Any | None:
        """The JSON value stored under ``key``, or None.

        Raises `StorageCorruption` if the stored value is not JSON.
        """
        async with self._database.read(f"read meta {key}") as connection:
            rows = list(
                await connection.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,))
            )
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except (ValueError, TypeError) as exc:
            raise StorageCorruption(
                f"meta row {key!r} is not JSON: {exc}", details={"table": "meta", "key": key}
            ) from exc

    async def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serializable value under ``key``, replacing any previous one."""
        encoded = json.dumps(value)
        async with self._database.write(f"write meta {key}") as connection:
            await connection.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, encoded),
            )

    async def _document_rows(self, document_id: str) -> DocumentRows | None:
        """The latest snapshot and the change rows of one document, with their row ids."""
        async with self._database.read(f"read rows of {document_id}") as connection:
            snapshots = await connection.execute_fetchall(
                "SELECT id, data FROM snapshots WHERE document_id = ? ORDER BY id DESC LIMIT 1",
                (document_id,),
            )
            changes = await connection.execute_fetchall(
                "SELECT id, data FROM changes WHERE document_id = ? ORDER BY id", (document_id,)
            )
        stored = DocumentRows(
            snapshot=next(iter(snapshots), None),  # type: ignore[arg-type]
            changes=list(changes),  # type: ignore[arg-type]
        )
        if stored.snapshot is None and not stored.changes:
            return None
        return stored


_ROWS_PER_STATEMENT = 1000
"""Most change rows written by one INSERT (3 parameters a row, far below SQLite's limit)."""


def _insert_changes_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        f"INSERT INTO changes (document_id, hash, data) VALUES {values}"
        " ON CONFLICT (document_id, hash) DO NOTHING"
    )


def _change_params(document_id: str, changes: Sequence[tuple[bytes, bytes]]) -> list[Any]:
    return [value for change_hash, data in changes for value in (document_id, change_hash, data)]


async def _delete_document_rows(connection: aiosqlite.Connection, document_id: str) -> int:
    removed = 0
    for table in ("changes", "snapshots", "sessions"):  # session_changes go by cascade
        cursor = await connection.execute(
            f"DELETE FROM {table} WHERE document_id = ?", (document_id,)
        )
        removed += max(cursor.rowcount, 0) if table != "sessions" else 0
    return removed


def _saved_snapshot_heads(snapshot_rows: Any) -> dict[str, list[bytes]]:
    """The heads of the snapshots that are saved documents, by document (a snapshot kept
    as a change log needs no check: it fails to load when a dependency is gone)."""
    return {
        document_id: split_heads(heads)
        for document_id, data, heads in snapshot_rows
        if not is_change_log(data)
    }


async def _covered_log(
    connection: aiosqlite.Connection, document_id: str, covered: set[bytes], limit: float
) -> bytes | None:
    """The document's change log up to the covered change rows, if at most `limit` bytes:
    the latest snapshot row (when it is a change log) followed by those rows in the order
    they were stored (an order Automerge loads fast: dependencies first). None when
    longer, or when the latest snapshot is a saved document, whose changes the rows
    cannot give back. Sizes are read first: most logs of small changes are too long."""
    previous = await connection.execute_fetchall(
        "SELECT data FROM snapshots WHERE document_id = ? ORDER BY id DESC LIMIT 1",
        (document_id,),
    )
    chunks = [data for (data,) in previous]
    if chunks and not is_change_log(chunks[0]):
        return None
    sizes = await connection.execute_fetchall(
        "SELECT id, hash, length(data) FROM changes WHERE document_id = ?", (document_id,)
    )
    keep = {row_id for row_id, change_hash, _ in sizes if change_hash in covered}
    size = sum(len(data) for data in chunks)
    size += sum(length for row_id, _, length in sizes if row_id in keep)
    if size > limit:
        return None
    rows = await connection.execute_fetchall(
        "SELECT id, data FROM changes WHERE document_id = ? ORDER BY id", (document_id,)
    )
    chunks.extend(data for row_id, data in rows if row_id in keep)
    return b"".join(chunks)


async def _count_changes(connection: aiosqlite.Connection, document_id: str) -> int:
    rows = await connection.execute_fetchall(
        "SELECT count(*) FROM changes WHERE document_id = ?", (document_id,)
    )
    return int(next(iter(rows))[0])
