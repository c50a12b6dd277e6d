"""The stored drafts: each administrator session's row and its draft's edits, in order
(each a command in the form `crdtmds.core.edits.Edit` stores; drafts stored by earlier
versions hold the Automerge changes of a fork instead), read and written within a
transaction of the caller's."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from crdtmds.errors import StorageError
from crdtmds.storage.document_chunk import join_heads, split_heads

UPSERT_SESSION = """
INSERT INTO sessions (uid, document_id, domain, admin, name, description, base_heads, actor,
                      created_at, last_active)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (uid) DO UPDATE SET
    document_id = excluded.document_id, domain = excluded.domain, admin = excluded.admin,
    name = excluded.name, description = excluded.description,
    base_heads = excluded.base_heads, actor = excluded.actor,
    created_at = excluded.created_at, last_active = excluded.last_active
"""


@dataclass(slots=True)
class SessionRecord:
    """An administrator session: its metadata and its stored draft rows, in order. `actor`
    is unused since drafts became edits (publishes take the server's actors)."""

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


async def rebase_session(
    connection: aiosqlite.Connection,
    uid: str,
    base_heads: list[bytes],
    changes: Sequence[bytes],
    last_active: float | None = None,
) -> None:
    cursor = await connection.execute(
        "UPDATE sessions SET base_heads = ?, last_active = coalesce(?, last_active) WHERE uid = ?",
        (join_heads(base_heads), last_active, uid),
    )
    if cursor.rowcount == 0:
        raise _no_session(uid)
    await connection.execute("DELETE FROM session_changes WHERE session_uid = ?", (uid,))
    await _insert_session_changes(connection, uid, changes, 0)


async def update_draft_metadata(
    connection: aiosqlite.Connection,
    uid: str,
    base_heads: list[bytes] | None,
    last_active: float | None,
) -> None:
    """New base heads and last activity of a stored draft, in one statement. The base
    heads may move only while no change is stored: those are based on the old ones."""
    joined = None if base_heads is None else join_heads(base_heads)
    cursor = await connection.execute(
        "UPDATE sessions SET base_heads = coalesce(?, base_heads),"
        " last_active = coalesce(?, last_active)"
        " WHERE uid = ? AND (? IS NULL OR base_heads = ?"
        " OR NOT EXISTS (SELECT 1 FROM session_changes WHERE session_uid = ?))",
        (joined, last_active, uid, joined, joined, uid),
    )
    if cursor.rowcount == 0:
        await require_session(connection, uid)
        raise StorageError(
            f"session {uid} has stored changes: its base heads cannot move",
            details={"session_uid": uid},
        )


async def require_session(connection: aiosqlite.Connection, uid: str) -> None:
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


def session_from_row(row: sqlite3.Row | tuple[Any, ...], changes: list[bytes]) -> SessionRecord:
    (uid, document_id, domain, admin, name, description, heads, actor, created, active) = row
    return SessionRecord(
        uid=uid,
        document_id=document_id,
        domain=domain,
        admin=admin,
        name=name,
        description=description,
        base_heads=split_heads(heads),
        actor=actor,
        created_at=created,
        last_active=active,
        changes=changes,
    )
