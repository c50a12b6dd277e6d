"""Persistence of the live documents: appending their changes to storage, and compacting
each document's change rows into a snapshot once they are many.

Order matters and is kept here: a change is on disk before anything else sees it (the
caller gossips only after `persist` or `persist_received` returned), and a document is
compacted only once the changes it covers are in the live document (a snapshot taken
before would lack them while their rows are dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from crdtmds.app.documents import Documents
from crdtmds.core.changes import applied_chunks
from crdtmds.core.docdata import change_rows
from crdtmds.core.domain import Domain
from crdtmds.errors import StorageError
from crdtmds.storage import Storage

log = logging.getLogger("crdtmds.persistence")

Change = tuple[bytes, bytes]
"""(hash, bytes) of one Automerge change."""


class Persister:
    """Appends changes of the live documents, and compacts them when due."""

    def __init__(self, storage: Storage, documents: Documents, compact_threshold: int) -> None:
        self.storage = storage
        self.documents = documents
        self.compact_threshold = compact_threshold
        self._uncompacted: dict[str, list[bytes] | None] = {}
        """Per document, the hashes of its change rows not yet in a snapshot; None when
        unknown (rows stored before this server started: compaction covers them all)."""
        self._compacted: dict[str, int] = {}
        """Change rows folded into snapshots per document since this server started."""
        self.publishing: set[str] = set()
        """Documents whose live copy holds a local publish not yet durable: a snapshot
        taken now could hold a change that is then taken back (see `Sessions.publish`)."""

    def track_loaded(self, document_ids: Iterable[str]) -> None:
        """Documents loaded from storage: their stored rows are not known one by one."""
        for document_id in document_ids:
            self._uncompacted[document_id] = None

    def forget(self, document_id: str) -> None:
        """A document removed from storage: nothing of it is left to compact."""
        self._uncompacted.pop(document_id, None)
        self._compacted.pop(document_id, None)

    async def persist(self, document_id: str, changes: list[Change]) -> int:
        """Append changes of the live document; returns the document's uncompacted row
        count, and compacts past the threshold."""
        if not changes:
            return 0
        count = await self.storage.append_changes(document_id, changes)
        self.note_appended(document_id, changes)
        await self.compact_if_due(document_id, count)
        return count

    async def persist_received(
        self, document_id: str, before_heads: list[bytes], chunks: Sequence[bytes] = ()
    ) -> int:
        """Persist the changes a peer applied to a live document since `before_heads`.

        `chunks` are the change chunks the peer's messages carried: stored as they came
        when they are exactly what was applied, which spares asking the document (its
        `get_changes` rebuilds each change from the operations)."""
        doc = self.documents.document(document_id)
        if doc is None:
            return 0
        changes = applied_chunks(chunks, before_heads, doc.get_heads()) if chunks else None
        if changes is None:
            changes = change_rows(doc, before_heads)
        await self.persist(document_id, changes)
        self.documents.received(document_id)
        return len(changes)

    async def recall_revision_changes(self, domain: Domain) -> None:
        """Tell `domain`, once, which change wrote each revision published here (stored
        with the publish), so that reading a revision does not list every change after
        it (`crdtmds.core.revision_changes`)."""
        if not domain.revision_changes.stored_read:
            stored = await self.storage.revisions.changes_of(domain.document_id)
            domain.revision_changes.note_stored(stored)

    def note_appended(self, document_id: str, changes: list[Change]) -> None:
        """Changes of the document were appended to storage (by `persist`, or by a
        publish's own write)."""
        tracked = self._uncompacted.setdefault(document_id, [])
        if tracked is not None:
            tracked.extend(h for h, _ in changes)

    async def compact_if_due(self, document_id: str, uncompacted: int) -> None:
        """Compact once the change rows reach the threshold and as many as the snapshots
        have taken in: saving a document stalls the server for a time that grows with the
        document, so the log grows with it and saving costs the same per change. A failure
        is logged, not raised: the changes are durable already, compaction only saves
        space, and it is tried again next time."""
        due = max(self.compact_threshold, self._compacted.get(document_id, 0))
        if uncompacted < due:
            return
        try:
            await self.compact(document_id)
        except StorageError as exc:
            log.warning("compaction of %s failed (will retry): %s", document_id, exc)

    async def compact(self, document_id: str) -> None:
        """Write a snapshot of the document and drop the change rows it covers."""
        doc = self.documents.document(document_id)
        if doc is None or document_id in self.publishing:
            return
        snapshot = doc.save()
        tracked = self._uncompacted.get(document_id)
        covered = tracked if tracked is not None else [c.hash for c in doc.get_changes([])]
        self._uncompacted[document_id] = []
        try:
            await self.storage.save_snapshot(document_id, snapshot, list(covered))
            self._compacted[document_id] = self._compacted.get(document_id, 0) + len(covered)
        except BaseException:
            # still uncompacted: cover these rows next time, with those appended meanwhile
            self._uncompacted[document_id] = [*covered, *self._uncompacted[document_id]]
            raise
