"""Loading stored documents, and naming the rows at fault when one does not load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import automerge.core

from crdtmds.core.changes import change_hash_and_deps
from crdtmds.errors import ProtocolError, StorageCorruption
from crdtmds.storage.document_chunk import (
    change_log_problem,
    document_chunk_heads,
    is_change_log,
)


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
class DocumentRows:
    """The stored rows of one document: its latest snapshot (if any) and its change rows."""

    snapshot: tuple[int, bytes] | None = None
    changes: list[tuple[int, bytes]] = field(default_factory=list)

    def concatenated(self) -> bytes:
        chunks = [data for _, data in self.changes]
        if self.snapshot is not None:
            chunks.insert(0, self.snapshot[1])
        return b"".join(chunks)


def chunks_by_document(snapshot_rows: Any, change_rows: Any) -> dict[str, list[bytes]]:
    """Each document's chunks: its latest snapshot first, then its changes in row order."""
    chunks: dict[str, list[bytes]] = {document_id: [data] for document_id, data in snapshot_rows}
    for document_id, data in change_rows:
        document_chunks = chunks.get(document_id)
        if document_chunks is None:
            chunks[document_id] = [data]
        else:
            document_chunks.append(data)
    return chunks


def changes_left_out(
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


def diagnose(document_id: str, stored: DocumentRows, load_error: str) -> list[LoadProblem]:
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


def corruption_error(document_id: str, problems: list[LoadProblem]) -> StorageCorruption:
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
    if is_change_log(data):
        problem = change_log_problem(data)
        return None if problem is None else f"snapshot change log is malformed: {problem}"
    try:
        document_chunk_heads(data)
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
