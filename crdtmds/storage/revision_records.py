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

    async def changes_of(self, document_id: str) -> dict[str, bytes]:
        """By revision uid, the change that wrote each entry published here."""
        async with self._database.read(f"read the revisions of {document_id}") as connection:
            rows = await connection.execute_fetchall(
                "SELECT revision, change FROM revision_changes WHERE document_id = ?",
                (document_id,),
            )
        return {revision: bytes(change) for revision, change in rows}


async def record_revision_change(
    connection: aiosqlite.Connection, document_id: str, revision: tuple[str, bytes]
) -> None:
    """Store (revision uid, change hash), inside the caller's transaction."""
    await connection.execute(
        "INSERT OR REPLACE INTO revision_changes VALUES (?, ?, ?)", (document_id, *revision)
    )
