"""The SQLite file of one server: creating it private, its schema, and transactions.

One connection in WAL mode with ``synchronous=FULL``; every statement goes through it,
serialized by an ``asyncio.Lock``. A write is one transaction, committed before the call
returns or rolled back on any SQLite error, which is raised as `StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite

from crdtmds.errors import StorageError, StorageVersionError

SCHEMA_VERSION = 1

# Tables added after schema version 1, created when missing (additive: an older
# crdtmds ignores them): each document's heads and, per peer, the heads both held
# alike (`crdtmds.storage.heads_records`); the change of each revision published here
# (`crdtmds.core.revision_changes`).
_ADDED_TABLES = """
CREATE TABLE IF NOT EXISTS document_heads (
    document_id TEXT PRIMARY KEY,
    heads BLOB NOT NULL,
    through_change INTEGER NOT NULL,
    through_snapshot INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_heads (
    peer TEXT NOT NULL,
    document_id TEXT NOT NULL,
    heads BLOB NOT NULL,
    PRIMARY KEY (peer, document_id)
);
CREATE TABLE IF NOT EXISTS revision_changes (
    document_id TEXT NOT NULL,
    revision TEXT NOT NULL,
    change BLOB NOT NULL,
    PRIMARY KEY (document_id, revision)
)
"""

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


class Database:
    """The open SQLite connection of a store. Create it with `await Database.open(path)`."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._connection: aiosqlite.Connection | None = connection
        self._lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Database:
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

    @contextlib.asynccontextmanager
    async def write(
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
    async def read(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
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
        for statement in _ADDED_TABLES.split(";"):
            await connection.execute(statement)
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


async def _rollback_quietly(connection: aiosqlite.Connection) -> None:
    """Roll back if a transaction is open (SQLite may already have rolled back on SQLITE_FULL)."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            await connection.execute("ROLLBACK")
