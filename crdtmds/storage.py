"""Durable storage of one crdtmds server: a single SQLite file in WAL mode, through aiosqlite.

Storage knows nothing of networking or of the policy model. It keeps:

- every Automerge document as an append-only log of change chunks (``changes``, keyed by
  ``(document_id, change hash)``) plus at most one snapshot (``snapshots``) written by
  compaction; a document loads in one ``Document.load`` of the snapshot followed by its
  change rows;
- administrator sessions (``sessions``) and the change chunks of each session's fork, in
  order (``session_changes``);
- node metadata as JSON values (``meta``).

Every write is one transaction on the single connection, serialized by an ``asyncio.Lock``,
and committed with ``synchronous=FULL`` before the call returns; on any SQLite error it is
rolled back and a `StorageError` is raised, so nothing is ever half-written.

Compaction is the caller's decision: `Storage.append_changes` returns how many change rows
a document has outside its snapshot; past `DEFAULT_COMPACT_THRESHOLD` the caller saves the
document and hands the snapshot and the hashes it covers to `Storage.save_snapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import automerge.core

from crdtmds.changes import (
    MAGIC,
    change_hash_and_deps,
    chunk_hash,
    read_uleb128,
    split_chunks,
)
from crdtmds.errors import ProtocolError, StorageCorruption, StorageError, StorageVersionError

SCHEMA_VERSION = 1
DEFAULT_COMPACT_THRESHOLD = 1000

HEAD_SIZE = 32

_SCHEMA = """
CREATE TABLE changes (
    id INTEGER PRIMARY KEY,
    document_id TEXT NOT NULL,
    hash BLOB NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (document_id, hash)
);
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    document_id TEXT NOT NULL,
    heads BLOB NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX snapshots_by_document ON snapshots (document_id, id);
CREATE TABLE sessions (
    uid TEXT PRIMARY KEY,
    document_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    admin TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    base_heads BLOB NOT NULL,
    actor BLOB NOT NULL,
    created_at REAL NOT NULL,
    last_active REAL NOT NULL
);
CREATE TABLE session_changes (
    session_uid TEXT NOT NULL REFERENCES sessions (uid) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (session_uid, seq)
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Change rows are read in insertion order: Automerge loads changes that arrive after their
# dependencies far faster than a shuffled log.
_SELECT_LATEST_SNAPSHOTS = """
SELECT s.document_id, s.data, s.heads FROM snapshots AS s
 WHERE s.id = (SELECT max(id) FROM snapshots WHERE document_id = s.document_id)
"""
_SELECT_ALL_CHANGES = "SELECT document_id, data, hash FROM changes ORDER BY id"

_UPSERT_SESSION = """
INSERT INTO sessions (uid, document_id, domain, admin, name, description, base_heads, actor,
                      created_at, last_active)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (uid) DO UPDATE SET
    document_id = excluded.document_id, domain = excluded.domain, admin = excluded.admin,
    name = excluded.name, description = excluded.description,
    base_heads = excluded.base_heads, actor = excluded.actor,
    created_at = excluded.created_at, last_active = excluded.last_active
"""


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """A stored document that could not be loaded, and the row found to be at fault.

    ``row_id`` is None when every row is well-formed on its own but the rows do not load
    together (for example a change whose dependency is missing).
    """

    document_id: str
    table: str
    row_id: int | None
    message: str


@dataclass(slots=True)
class LoadedDocuments:
    """The result of `Storage.load_all`: the documents that loaded, and why others did not."""

    documents: dict[str, automerge.core.Document]
    problems: list[LoadProblem]


@dataclass(slots=True)
class SessionRecord:
    """An administrator session: its metadata and the change chunks of its fork, in order."""

    uid: str
    document_id: str
    domain: str
    admin: str
    name: str
    description: str
    base_heads: list[bytes]
    actor: bytes
    created_at: float
    last_active: float
    changes: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class _DocumentRows:
    """The stored rows of one document: its latest snapshot (if any) and its change rows."""

    snapshot: tuple[int, bytes] | None = None
    changes: list[tuple[int, bytes]] = field(default_factory=list)

    def concatenated(self) -> bytes:
        chunks = [data for _, data in self.changes]
        if self.snapshot is not None:
            chunks.insert(0, self.snapshot[1])
        return b"".join(chunks)


class Storage:
    """The SQLite store of one server. Create it with `await Storage.open(path)`."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._connection: aiosqlite.Connection | None = connection
        self._lock = asyncio.Lock()
        self._change_rows: dict[str, int] = {}
        """Change rows per document, once counted (see `_append_changes`)."""
        self.path = path

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Storage:
        """Open (creating if needed) the store at ``path``.

        A new directory is created 0700 and a new file 0600 (SQLite gives its ``-wal`` and
        ``-shm`` files the mode of the database file). Raises `StorageVersionError` for a
        file written by a newer schema and `StorageError` for a file that is not SQLite.
        """
        path = Path(path)
        _create_private_file(path)
        try:
            connection = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {path}: {exc}", details={"path": str(path)}) from exc
        try:
            await _prepare_database(connection, path)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, path)

    async def close(self) -> None:
        """Close the connection; further calls raise `StorageError`. Closing twice is fine."""
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()

    # -- documents -------------------------------------------------------------------------

    async def append_changes(self, document_id: str, changes: Sequence[tuple[bytes, bytes]]) -> int:
        """Store ``(change hash, change bytes)`` pairs of a document, durably, in one transaction.

        Pairs already stored for this document are ignored. Returns the number of change rows
        of the document not yet covered by a snapshot; compact when it passes a threshold.
        """
        # One INSERT statement commits by itself: no BEGIN and COMMIT needed.
        one_statement = document_id in self._change_rows and len(changes) <= _ROWS_PER_STATEMENT
        async with self._write(
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
        async with self._write(f"publish to {document_id}") as connection:
            count = await self._append_changes(connection, document_id, changes)
            await _rebase_session(connection, session_uid, base_heads, [], last_active)
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
        """Compact a document: store ``snapshot`` (a ``Document.save()``) in one transaction,
        drop older snapshots, and drop the change rows whose hash is in ``covered_hashes``.

        Change rows not named in ``covered_hashes`` (appended concurrently) are kept. The
        caller vouches that the snapshot contains every covered change. Raises `StorageError`
        if ``snapshot`` is not a well-formed Automerge document chunk (followed by the change
        chunks ``Document.save()`` appends for changes still waiting for a dependency),
        before touching anything.
        """
        try:
            heads = _document_chunk_heads(snapshot)
        except ValueError as exc:
            raise StorageError(f"snapshot of {document_id} is not a document: {exc}") from exc
        hash_rows = [(document_id, change_hash) for change_hash in covered_hashes]
        async with self._write(f"save snapshot of {document_id}") as connection:
            cursor = await connection.execute(
                "INSERT INTO snapshots (document_id, heads, data, created_at) VALUES (?, ?, ?, ?)",
                (document_id, b"".join(heads), snapshot, time.time()),
            )
            await connection.execute(
                "DELETE FROM snapshots WHERE document_id = ? AND id < ?",
                (document_id, cursor.lastrowid),
            )
            await connection.executemany(
                "DELETE FROM changes WHERE document_id = ? AND hash = ?", hash_rows
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
            raise _corruption_error(document_id, _diagnose(document_id, stored, str(exc))) from exc

    async def load_all(self) -> LoadedDocuments:
        """Every stored document, each from one ``Document.load`` of its snapshot and changes.

        A document that fails to load is left out and described by `LoadProblem` entries
        naming the faulty rows; the other documents load regardless.
        """
        async with self._read("load all documents") as connection:
            snapshot_rows = await connection.execute_fetchall(_SELECT_LATEST_SNAPSHOTS)
            change_rows = await connection.execute_fetchall(_SELECT_ALL_CHANGES)
        snapshot_heads = {
            document_id: _split_heads(heads) for document_id, _, heads in snapshot_rows
        }
        change_hashes: dict[str, list[bytes]] = {}
        for document_id, _, change_hash in change_rows:
            change_hashes.setdefault(document_id, []).append(change_hash)
        chunks_by_document = _chunks_by_document(
            [row[:2] for row in snapshot_rows], [row[:2] for row in change_rows]
        )
        result = LoadedDocuments(documents={}, problems=[])
        for document_id, chunks in chunks_by_document.items():
            try:
                doc = automerge.core.Document.load(b"".join(chunks))
            except Exception as exc:  # the binding raises a bare Exception for malformed input
                stored = await self._document_rows(document_id) or _DocumentRows()
                result.problems.extend(_diagnose(document_id, stored, str(exc)))
                continue
            left_out = _changes_left_out(
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
        async with self._read("list documents") as connection:
            rows = await connection.execute_fetchall(
                "SELECT document_id FROM changes UNION SELECT document_id FROM snapshots ORDER BY 1"
            )
        return [document_id for (document_id,) in rows]

    async def uncompacted_count(self, document_id: str) -> int:
        """How many change rows of the document no snapshot covers yet."""
        async with self._read(f"count changes of {document_id}") as connection:
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
            _join_heads(record.base_heads),
            record.actor,
            record.created_at,
            record.last_active,
        )
        async with self._write(f"save session {record.uid}") as connection:
            await connection.execute(_UPSERT_SESSION, row)

    async def append_session_changes(
        self,
        uid: str,
        changes: Sequence[bytes],
        *,
        base_heads: list[bytes] | None = None,
        last_active: float | None = None,
    ) -> None:
        """Append change chunks to a saved session's fork, after those already stored, in
        one transaction with its new ``base_heads`` (a draft that was empty may have been
        moved onto newer heads) and ``last_active``, when given."""
        async with self._write(f"append changes to session {uid}") as connection:
            if base_heads is None and last_active is None:
                await _require_session(connection, uid)
            else:
                await _update_draft_metadata(connection, uid, base_heads, last_active)
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
        """Rebase a saved session: new base heads and the fork's whole new change list."""
        async with self._write(f"replace changes of session {uid}") as connection:
            await _rebase_session(connection, uid, base_heads, changes)

    async def delete_session(self, uid: str) -> None:
        """Remove a session and its changes; deleting an unknown session is a no-op."""
        async with self._write(f"delete session {uid}") as connection:
            await connection.execute("DELETE FROM sessions WHERE uid = ?", (uid,))

    async def load_sessions(self) -> list[SessionRecord]:
        """Every stored session with its changes, oldest session first."""
        async with self._read("load sessions") as connection:
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
        return [_session_from_row(row, changes.get(row[0], [])) for row in session_rows]

    # -- node metadata ---------------------------------------------------------------------

    async def get_meta(self, key: str) -> Any | None:
        """The JSON value stored under ``key``, or None.

        Raises `StorageCorruption` if the stored value is not JSON.
        """
        async with self._read(f"read meta {key}") as connection:
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
        async with self._write(f"write meta {key}") as connection:
            await connection.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, encoded),
            )

    async def _document_rows(self, document_id: str) -> _DocumentRows | None:
        """The latest snapshot and the change rows of one document, with their row ids."""
        async with self._read(f"read rows of {document_id}") as connection:
            snapshots = await connection.execute_fetchall(
                "SELECT id, data FROM snapshots WHERE document_id = ? ORDER BY id DESC LIMIT 1",
                (document_id,),
            )
            changes = await connection.execute_fetchall(
                "SELECT id, data FROM changes WHERE document_id = ? ORDER BY id", (document_id,)
            )
        stored = _DocumentRows(
            snapshot=next(iter(snapshots), None),  # type: ignore[arg-type]
            changes=list(changes),  # type: ignore[arg-type]
        )
        if stored.snapshot is None and not stored.changes:
            return None
        return stored

    async def check_writable(self) -> None:
        """Raise `StorageError` unless this process can write the store.

        SQLite opens a file it may not write read-only without a word, and reads work: the
        first write (a login, a change from a peer) would fail instead. So a write is
        tried: a row in a transaction that is rolled back, which needs the write lock (the
        ``-shm`` file) and a writable database file, and leaves nothing behind.
        """
        async with self._lock:
            connection = self._open_connection()
            try:
                await connection.execute("BEGIN IMMEDIATE")
                try:
                    await connection.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        (_WRITE_PROBE_KEY, "{}"),
                    )
                finally:
                    await _rollback_quietly(connection)
            except sqlite3.Error as exc:
                raise _not_writable_error(self.path, exc) from exc

    # -- transactions ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(
        self, action: str, *, statement: bool = False
    ) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed if the block succeeds, rolled back otherwise.

        A block that runs a single `statement` needs no BEGIN and COMMIT: out of a
        transaction SQLite commits each statement by itself, durably, before it returns;
        that is one trip to the database thread instead of three."""
        async with self._lock:
            connection = self._open_connection()
            try:
                if not statement:
                    await connection.execute("BEGIN IMMEDIATE")
                yield connection
                if not statement:
                    await connection.execute("COMMIT")
            except BaseException as exc:
                await _rollback_quietly(connection)
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"{action}: {exc}", details={"action": action}) from exc
                raise

    @contextlib.asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """Reads take the lock too, so they never see a write transaction half done."""
        async with self._lock:
            connection = self._open_connection()
            try:
                yield connection
            except sqlite3.Error as exc:
                raise StorageError(f"{action}: {exc}", details={"action": action}) from exc

    def _open_connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise StorageError(f"storage {self.path} is closed")
        return self._connection


# -- opening ---------------------------------------------------------------------------------

_WRITE_PROBE_KEY = "write-probe"
_READ_ONLY_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN})
"""Primary result codes of a store that cannot be written (the file, or its -wal and -shm
files, or their directory)."""
_STORE_SUFFIXES = ("", "-wal", "-shm")


def _not_writable_error(path: Path, exc: sqlite3.Error) -> StorageError:
    """Name what cannot be written (the file, its directory, its -wal and -shm files)."""
    blocked = [
        f"{candidate} (mode {candidate.stat().st_mode & 0o7777:04o})"
        for candidate in (path.parent, *(Path(f"{path}{s}") for s in _STORE_SUFFIXES))
        if candidate.exists() and not os.access(candidate, os.W_OK)
    ]
    where = f"; not writable: {', '.join(blocked)}" if blocked else ""
    return StorageError(
        f"cannot write {path}: {exc}{where}. The server must be able to write its database "
        "file, the -wal and -shm files beside it and their directory: check their owner "
        "and mode, and that the file system is not mounted read-only",
        details={"path": str(path), "not-writable": blocked},
    )


def _create_private_file(path: Path) -> None:
    """Create the parent directory (0700) and the database file (0600) if they are missing."""
    directory = path.parent
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        directory.chmod(0o700)  # the umask may have cleared bits of mkdir's mode
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc}", details={"path": str(path)}) from exc
    os.close(descriptor)


async def _prepare_database(connection: aiosqlite.Connection, path: Path) -> None:
    """Check the schema version, switch to WAL and create the schema of a new file."""
    try:
        version = await _user_version(connection)
        if version > SCHEMA_VERSION:
            raise StorageVersionError(
                f"{path} has schema version {version}, newer than version {SCHEMA_VERSION}"
                " that this crdtmds supports",
                details={"path": str(path), "found": version, "supported": SCHEMA_VERSION},
            )
        rows = await connection.execute_fetchall("PRAGMA journal_mode = WAL")
        mode = next(iter(rows))[0]
        if mode != "wal":
            raise StorageError(f"{path}: cannot enable WAL (journal mode is {mode})")
        await connection.execute("PRAGMA synchronous = FULL")
        await connection.execute("PRAGMA foreign_keys = ON")
        if version == 0:
            await _create_schema(connection)
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _READ_ONLY_CODES:
            raise _not_writable_error(path, exc) from exc
        raise StorageError(f"cannot open {path}: {exc}", details={"path": str(path)}) from exc


async def _user_version(connection: aiosqlite.Connection) -> int:
    rows = await connection.execute_fetchall("PRAGMA user_version")
    return int(next(iter(rows))[0])


async def _create_schema(connection: aiosqlite.Connection) -> None:
    """Create every table and stamp the version, all in one transaction."""
    await connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                await connection.execute(statement)
        await connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await connection.execute("COMMIT")
    except BaseException:
        await _rollback_quietly(connection)
        raise


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


async def _rollback_quietly(connection: aiosqlite.Connection) -> None:
    """Roll back if a transaction is open (SQLite may already have rolled back on SQLITE_FULL)."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            await connection.execute("ROLLBACK")


# -- statements shared by several operations ------------------------------------------------


async def _count_changes(connection: aiosqlite.Connection, document_id: str) -> int:
    rows = await connection.execute_fetchall(
        "SELECT count(*) FROM changes WHERE document_id = ?", (document_id,)
    )
    return int(next(iter(rows))[0])


async def _rebase_session(
    connection: aiosqlite.Connection,
    uid: str,
    base_heads: list[bytes],
    changes: Sequence[bytes],
    last_active: float | None = None,
) -> None:
    cursor = await connection.execute(
        "UPDATE sessions SET base_heads = ?, last_active = coalesce(?, last_active) WHERE uid = ?",
        (_join_heads(base_heads), last_active, uid),
    )
    if cursor.rowcount == 0:
        raise _no_session(uid)
    await connection.execute("DELETE FROM session_changes WHERE session_uid = ?", (uid,))
    await _insert_session_changes(connection, uid, changes, 0)


async def _update_draft_metadata(
    connection: aiosqlite.Connection,
    uid: str,
    base_heads: list[bytes] | None,
    last_active: float | None,
) -> None:
    """New base heads and last activity of a stored draft, in one statement. The base
    heads may move only while no change is stored: those are based on the old ones."""
    joined = None if base_heads is None else _join_heads(base_heads)
    cursor = await connection.execute(
        "UPDATE sessions SET base_heads = coalesce(?, base_heads),"
        " last_active = coalesce(?, last_active)"
        " WHERE uid = ? AND (? IS NULL OR base_heads = ?"
        " OR NOT EXISTS (SELECT 1 FROM session_changes WHERE session_uid = ?))",
        (joined, last_active, uid, joined, joined, uid),
    )
    if cursor.rowcount == 0:
        await _require_session(connection, uid)
        raise StorageError(
            f"session {uid} has stored changes: its base heads cannot move",
            details={"session_uid": uid},
        )


async def _require_session(connection: aiosqlite.Connection, uid: str) -> None:
    rows = await connection.execute_fetchall("SELECT 1 FROM sessions WHERE uid = ?", (uid,))
    if not list(rows):
        raise _no_session(uid)


def _no_session(uid: str) -> StorageError:
    return StorageError(f"no stored session {uid}", details={"session_uid": uid})


async def _insert_session_changes(
    connection: aiosqlite.Connection, uid: str, changes: Sequence[bytes], first_seq: int
) -> None:
    await connection.executemany(
        "INSERT INTO session_changes (session_uid, seq, data) VALUES (?, ?, ?)",
        [(uid, first_seq + offset, data) for offset, data in enumerate(changes)],
    )


def _session_from_row(row: sqlite3.Row | tuple[Any, ...], changes: list[bytes]) -> SessionRecord:
    (uid, document_id, domain, admin, name, description, heads, actor, created, active) = row
    return SessionRecord(
        uid=uid,
        document_id=document_id,
        domain=domain,
        admin=admin,
        name=name,
        description=description,
        base_heads=_split_heads(heads),
        actor=actor,
        created_at=created,
        last_active=active,
        changes=changes,
    )


def _join_heads(heads: Sequence[bytes]) -> bytes:
    for head in heads:
        if len(head) != HEAD_SIZE:
            raise ValueError(f"a head is a {HEAD_SIZE}-byte change hash, got {len(head)} bytes")
    return b"".join(heads)


def _split_heads(joined: bytes) -> list[bytes]:
    return [joined[start : start + HEAD_SIZE] for start in range(0, len(joined), HEAD_SIZE)]


# -- loading ---------------------------------------------------------------------------------


def _chunks_by_document(snapshot_rows: Any, change_rows: Any) -> dict[str, list[bytes]]:
    """Each document's chunks: its latest snapshot first, then its changes in row order."""
    chunks: dict[str, list[bytes]] = {document_id: [data] for document_id, data in snapshot_rows}
    for document_id, data in change_rows:
        document_chunks = chunks.get(document_id)
        if document_chunks is None:
            chunks[document_id] = [data]
        else:
            document_chunks.append(data)
    return chunks


def _changes_left_out(
    doc: automerge.core.Document, snapshot_heads: list[bytes] | None, hashes: list[bytes]
) -> int:
    """How many stored change rows the loaded document lacks.

    A load of change rows alone raises when a dependency is missing, but a snapshot
    followed by such a change loads without the change; so a document loaded from a
    snapshot must hold every change row, after the snapshot or covered by it.
    """
    if snapshot_heads is None or not hashes:
        return 0
    since_snapshot = {change.hash for change in doc.get_changes(snapshot_heads)}
    missing = [h for h in hashes if h not in since_snapshot]
    if not missing:
        return 0
    everything = {change.hash for change in doc.get_changes([])}  # rows the snapshot covers
    return sum(1 for h in missing if h not in everything)


def _diagnose(document_id: str, stored: _DocumentRows, load_error: str) -> list[LoadProblem]:
    """Name the rows that are malformed on their own; else blame the document as a whole."""
    problems: list[LoadProblem] = []
    if stored.snapshot is not None:
        row_id, data = stored.snapshot
        message = _snapshot_problem(data)
        if message is not None:
            problems.append(LoadProblem(document_id, "snapshots", row_id, message))
    for row_id, data in stored.changes:
        message = _change_chunk_problem(data)
        if message is not None:
            problems.append(LoadProblem(document_id, "changes", row_id, message))
    if not problems:
        problems.append(LoadProblem(document_id, "changes", None, load_error))
    return problems


def _corruption_error(document_id: str, problems: list[LoadProblem]) -> StorageCorruption:
    first = problems[0]
    where = first.table if first.row_id is None else f"{first.table} row {first.row_id}"
    return StorageCorruption(
        f"cannot load {document_id}, {where}: {first.message}",
        details={
            "document_id": document_id,
            "table": first.table,
            "row_id": first.row_id,
            "problems": [
                {"table": p.table, "row_id": p.row_id, "message": p.message} for p in problems
            ],
        },
    )


def _snapshot_problem(data: bytes) -> str | None:
    try:
        _document_chunk_heads(data)
        automerge.core.Document.load(data)
    except Exception as exc:  # ValueError from the parser, bare Exception from the binding
        return f"snapshot does not load: {exc}"
    return None


def _change_chunk_problem(data: bytes) -> str | None:
    try:
        change_hash_and_deps(data)
    except ProtocolError as exc:
        return f"malformed change chunk: {exc.message}"
    return None


# -- Automerge binary chunks -----------------------------------------------------------------
#
# A chunk is: magic (4 bytes), checksum (first 4 bytes of the SHA-256 of what follows it,
# taken over the uncompressed form), chunk type (0 document, 1 change, 2 deflated change),
# body length (unsigned LEB128), body. A change's hash is the whole SHA-256 of type, length
# and body of its uncompressed form. These checks let a failed load name the row at fault.

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


def _document_chunk_heads(data: bytes) -> list[bytes]:
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
    return _split_heads(body[position:end])
