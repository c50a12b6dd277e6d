"""Loading one stored document synchronously, for a server that loads domains on first
use from code that cannot wait (a sync message being applied, an API call's lookup).

A second, read-only SQLite connection: in WAL mode it sees every committed write of the
main connection and never blocks it. Its rows are those `Storage.load_document` reads.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import automerge.core

from crdtmds.core.changes import change_hash_and_deps
from crdtmds.errors import StorageError
from crdtmds.storage.document_chunk import document_chunk_heads, is_change_log
from crdtmds.storage.loading import (
    DocumentRows,
    LoadProblem,
    changes_left_out,
    corruption_error,
    diagnose,
)


class DocumentReader:
    """Reads and loads single documents from a server's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def load(self, document_id: str) -> tuple[automerge.core.Document, int] | None:
        """The stored document and its stored size in bytes, or None if nothing is
        stored. Raises `StorageCorruption` naming the rows at fault if it does not load."""
        stored = self._rows(document_id)
        if stored is None:
            return None
        data = stored.concatenated()
        try:
            doc = automerge.core.Document.load(data)
        except Exception as exc:  # the binding raises a bare Exception for malformed input
            raise corruption_error(document_id, diagnose(document_id, stored, str(exc))) from exc
        left_out = _changes_left_out(doc, stored)
        if left_out:
            message = f"{left_out} change rows do not load: a change they depend on is missing"
            problem = LoadProblem(document_id, "changes", None, message)
            raise corruption_error(document_id, [problem])
        return doc, len(data)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _rows(self, document_id: str) -> DocumentRows | None:
        try:
            connection = self._open()
            connection.execute("BEGIN")  # one read transaction: a compaction commits whole
            snapshot = connection.execute(
                "SELECT id, data FROM snapshots WHERE document_id = ? ORDER BY id DESC LIMIT 1",
                (document_id,),
            ).fetchone()
            changes = connection.execute(
                "SELECT id, data FROM changes WHERE document_id = ? ORDER BY id", (document_id,)
            ).fetchall()
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"read rows of {document_id}: {exc}") from exc
        if snapshot is None and not changes:
            return None
        return DocumentRows(snapshot=snapshot, changes=changes)

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._connection = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None
            )
        return self._connection


def _changes_left_out(doc: automerge.core.Document, stored: DocumentRows) -> int:
    """As `Storage.load_all` checks: a snapshot followed by a change whose dependency is
    missing loads without that change. A snapshot kept as a change log needs no check:
    it fails to load outright when a dependency is gone."""
    if stored.snapshot is None or not stored.changes or is_change_log(stored.snapshot[1]):
        return 0
    heads = document_chunk_heads(stored.snapshot[1])
    hashes = [change_hash_and_deps(data)[0] for _, data in stored.changes]
    return changes_left_out(doc, heads, hashes)
