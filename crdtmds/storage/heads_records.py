"""What a server remembers of heads without loading documents: each document's heads as
of its last unload (``document_heads``), and per peer server the heads both sides last
held alike (``peer_heads``). Both tables are additive: a store without them gets them at
open, and an older crdtmds ignores them.

A ``document_heads`` row is trusted only while no change row or snapshot of the document
was written after it (``through_change``, ``through_snapshot``): a crash after a document
changed leaves its row stale, and the document is then treated as one whose heads are
unknown (it is loaded to be compared).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import aiosqlite

from crdtmds.storage.database import Database
from crdtmds.storage.document_chunk import join_heads, split_heads

_SAVE_HEADS = """
INSERT OR REPLACE INTO document_heads (document_id, heads, through_change, through_snapshot)
SELECT ?, ?,
       (SELECT coalesce(max(id), 0) FROM changes WHERE document_id = ?),
       (SELECT coalesce(max(id), 0) FROM snapshots WHERE document_id = ?)
"""


class HeadsRecords:
    """The heads tables of a store (`Storage.heads`)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def catalogue(self) -> dict[str, list[bytes] | None]:
        """Every stored document id, with its heads as last recorded by
        `save_document_heads` while no row of it was written since (else None)."""
        async with self._database.read("read the document catalogue") as connection:
            return await read_catalogue(connection)

    async def save_document_heads(self, heads: Mapping[str, list[bytes]]) -> None:
        """Record documents' heads; the caller vouches that every change they reach is
        stored already."""
        if heads:
            async with self._database.write("record document heads") as connection:
                await write_document_heads(connection, heads)

    async def load_peer_heads(self) -> dict[str, dict[str, list[bytes]]]:
        """Per peer server, the heads it and this server last held alike, per document."""
        async with self._database.read("read peer heads") as connection:
            return await read_peer_heads(connection)

    async def save_peer_heads(self, rows: Iterable[tuple[str, str, list[bytes]]]) -> None:
        """(peer, document id, heads) records that replace the ones stored."""
        rows = list(rows)
        if rows:
            async with self._database.write("record peer heads") as connection:
                await write_peer_heads(connection, rows)


async def read_catalogue(connection: aiosqlite.Connection) -> dict[str, list[bytes] | None]:
    """Every stored document id, with its heads when a row still vouches for them."""
    # Three plain scans joined here: SQLite joins grouped subqueries without an index.
    changes = dict(
        await connection.execute_fetchall(
            "SELECT document_id, max(id) FROM changes GROUP BY document_id"
        )
    )
    snapshots = dict(
        await connection.execute_fetchall(
            "SELECT document_id, max(id) FROM snapshots GROUP BY document_id"
        )
    )
    recorded = {
        row[0]: row[1:]
        for row in await connection.execute_fetchall(
            "SELECT document_id, heads, through_change, through_snapshot FROM document_heads"
        )
    }
    catalogue: dict[str, list[bytes] | None] = {}
    for document_id in {*changes, *snapshots}:
        record = recorded.get(document_id)
        fresh = record is not None and (
            record[1] >= changes.get(document_id, 0) and record[2] >= snapshots.get(document_id, 0)
        )
        catalogue[document_id] = split_heads(record[0]) if record is not None and fresh else None
    return catalogue


async def write_document_heads(
    connection: aiosqlite.Connection, heads: Mapping[str, list[bytes]]
) -> None:
    """Record documents' heads; the caller vouches that every change they reach is stored."""
    await connection.executemany(
        _SAVE_HEADS,
        [(doc_id, join_heads(sorted(h)), doc_id, doc_id) for doc_id, h in heads.items()],
    )


async def read_peer_heads(connection: aiosqlite.Connection) -> dict[str, dict[str, list[bytes]]]:
    rows = await connection.execute_fetchall("SELECT peer, document_id, heads FROM peer_heads")
    result: dict[str, dict[str, list[bytes]]] = {}
    for peer, document_id, heads in rows:
        result.setdefault(peer, {})[document_id] = split_heads(heads)
    return result


async def write_peer_heads(
    connection: aiosqlite.Connection, rows: Iterable[tuple[str, str, list[bytes]]]
) -> None:
    params: list[Any] = [(peer, doc_id, join_heads(sorted(h))) for peer, doc_id, h in rows]
    await connection.executemany(
        "INSERT OR REPLACE INTO peer_heads (peer, document_id, heads) VALUES (?, ?, ?)", params
    )


async def delete_heads_of(connection: aiosqlite.Connection, document_id: str) -> None:
    await connection.execute("DELETE FROM document_heads WHERE document_id = ?", (document_id,))
    await connection.execute("DELETE FROM peer_heads WHERE document_id = ?", (document_id,))
