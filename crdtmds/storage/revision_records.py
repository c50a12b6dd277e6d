"""The change that wrote each revision entry published by this server
(``revision_changes``), stored in the publish's own transaction: reading a revision
after a restart then needs no listing of the changes after it
(`crdtmds.core.revision_changes`). Additive, like the heads tables.
"""

from __future__ import annotations

import aiosqlite

from crdtmds.storage.database import Database


class RevisionRecords:
    """The revision changes of a store (`Storage.revisions`)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def change_of(self, document_id: str, revision: str) -> bytes | None:
        """The change that wrote the entry of `revision`, if it was published here."""
        async with self._database.read(f"read a revision of {document_id}") as connection:
            cursor = await connection.execute(
                "SELECT change FROM revision_changes WHERE document_id = ? AND revision = ?",
                (document_id, revision),
            )
            row = await cursor.fetchone()
        return None if row is None else bytes(row[0])


async def record_revision_change(
    connection: aiosqlite.Connection, document_id: str, revision: tuple[str, bytes]
) -> None:
    """Store (revision uid, change hash), inside the caller's transaction."""
    await connection.execute(
        "INSERT OR REPLACE INTO revision_changes VALUES (?, ?, ?)", (document_id, *revision)
    )
