"""Administrators' sessions on one server: their drafts, stored so that they survive a
restart, and the whole publish protocol in one place.

A publish is, in this order, one at a time per domain: an actor taken from this
server's pool (`core/actor_pool.py`) and the document held back from gossip; the draft's
edits and its revision entry written as one change of the live document (rebased first
when others published since the draft started, see `core/draft.py`); that change durable
on this server (one storage write, which also empties the stored draft); the document
released to the hub, which is told of the change (it travels in the next message to each
peer), and the listeners; compaction if due. A storage write that fails takes the change
back out of the live document, retires the actor, and leaves the draft as it was.

Beside the database, the session journal lists the drafts with stored changes (see
`storage/session_journal.py`); it changes when a draft gains its first stored change and
when one is published, discarded or closed, and a start compares it with what the
database holds (`app/lost_drafts.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from crdtmds.app import lost_drafts
from crdtmds.app.documents import Documents
from crdtmds.app.persistence import Persister
from crdtmds.core.actor_pool import ActorPool
from crdtmds.core.draft import Published
from crdtmds.core.session import Session
from crdtmds.errors import SessionError, StorageCorruption, StorageError, is_core_error
from crdtmds.storage import JournalEntry, SessionJournal, SessionRecord, Storage
from crdtmds.sync.gossip import Gossip

log = logging.getLogger("crdtmds.sessions")
PROGRESS_INTERVAL = 2.0
"""Seconds between two progress lines of a long start."""
ACTOR_POOL_KEY = "actor-pool"
"""Meta row of this server's publishing actors (`ActorPool.to_meta`)."""
Runner = Callable[[Callable[[], Published]], Awaitable[Published]]
"""Runs the writing of a publish (in a worker thread, for a revert)."""


class Sessions:
    """Every session (draft) of this server, by uid."""

    def __init__(
        self,
        storage: Storage,
        documents: Documents,
        persister: Persister,
        hub: Gossip,
        server_name: str,
    ) -> None:
        self.storage = storage
        self.documents = documents
        self.persister = persister
        self.hub = hub
        self.server_name = server_name
        self.by_uid: dict[str, Session] = {}
        self.journal = SessionJournal()  # in memory until `restore_stored` opens the file
        self.actors = ActorPool()  # read from storage by `restore_stored`
        self._publishing: dict[str, asyncio.Lock] = {}
        """Per domain: publishes are written and made durable one at a time (a change
        taken back must be the last one written)."""

    async def restore_stored(self, data_dir: Path) -> None:
        """Rebuild the drafts stored before a restart; a draft that does not rebuild stops
        the start (serving without it would lose an administrator's work silently). Then
        check the session journal: a draft it lists that the database lost is logged."""
        self.actors = ActorPool.from_meta(await self.storage.get_meta(ACTOR_POOL_KEY))
        records = await self.storage.load_sessions()
        started = last_said = time.monotonic()
        for done, record in enumerate(records):
            if time.monotonic() - last_said >= PROGRESS_INTERVAL:  # a long start says so
                last_said = time.monotonic()
                log.info("restoring drafts: %d of %d", done, len(records))
            domain = self.documents.domains.get(record.document_id)
            if domain is None:
                log.warning("session %s belongs to an unknown domain; kept on disk", record.uid)
                continue
            try:
                self.by_uid[record.uid] = Session.restore(
                    domain,
                    uid=record.uid,
                    admin=record.admin,
                    server=self.server_name,
                    base_heads=record.base_heads,
                    changes=record.changes,
                    name=record.name,
                    description=record.description,
                    created_at=record.created_at,
                )
            except BaseException as exc:
                if not is_core_error(exc):
                    raise
                raise StorageCorruption(
                    f"{data_dir}: the stored draft of session {record.uid} "
                    f"({record.admin}, domain {record.domain}) cannot be restored: {exc}",
                    details={"table": "session_changes", "session": record.uid},
                ) from exc
        if records:
            log.info("restored %d drafts in %.1f s", len(records), time.monotonic() - started)
        await self._check_journal(data_dir, records)

    async def _check_journal(self, data_dir: Path, records: list[SessionRecord]) -> None:
        journal, problem = SessionJournal.load(data_dir)
        if problem is not None:
            log.warning(
                "the session journal %s is unreadable (%s): starting a new one; drafts the "
                "database lost before now cannot be detected", journal.path, problem,
            )  # fmt: skip
        cluster = self.documents.cluster
        result = lost_drafts.reconcile(
            journal.entries.values(),
            records,
            now=time.time(),
            deleted=cluster.is_deleted,
            published_since=self._published_since,
        )
        for entry in result.newly_lost:
            log.warning("%s", lost_drafts.start_warning(entry))
        self.journal = journal
        await journal.replace_all(result.entries)

    def _published_since(self, entry: JournalEntry) -> bool:
        domain = self.documents.domains.get(entry.document_id)
        return domain is not None and lost_drafts.published_after(domain.state.revisions, entry)

    async def take_lost(self, admin: str, document_id: str) -> list[JournalEntry]:
        """The drafts of `admin` in the domain that a start found lost, forgotten once
        returned (their administrator is about to be told)."""
        lost = [
            entry
            for entry in self.journal.lost()
            if entry.admin == admin and entry.document_id == document_id
        ]
        await self.journal.update(remove=[entry.uid for entry in lost])
        return lost

    async def open(
        self, domain_ref: Any, *, admin: str, name: str = "", description: str = ""
    ) -> Session:
        domain = self.documents.domain(domain_ref)
        session = Session.open(
            domain, admin=admin, server=self.server_name, name=name, description=description
        )
        await self.storage.save_session(_record_of(session))
        self.by_uid[session.uid] = session
        return session

    def get(self, uid: Any) -> Session:
        session = self.by_uid.get(uid) if isinstance(uid, str) else None
        if session is None:
            raise SessionError(f"no session '{uid}' on this server")
        return session

    def of(self, admin: str, document_id: str | None = None) -> list[Session]:
        """The sessions of `admin` (in one domain, given its document id)."""
        return [
            s
            for s in self.by_uid.values()
            if s.admin == admin and (document_id is None or s.domain.document_id == document_id)
        ]

    async def save_edits(self, session: Session) -> None:
        """Persist the draft's new changes, so an unpublished session survives a restart.

        One write: the new changes, the draft's base heads (an empty draft may have moved
        onto newer ones, see `start_from_live`) and its last activity. Changes that fail
        to persist (a full disk) are kept for the next call: later changes depend on them,
        and a stored draft must never lack a dependency.
        """
        unsaved = session.take_unsaved_changes()
        try:
            await self.storage.append_session_changes(
                session.uid,
                unsaved,
                base_heads=session.base_heads,
                last_active=session.last_active,
            )
        except StorageError:
            session.return_unsaved_changes(unsaved)
            raise
        if unsaved and session.uid not in self.journal:
            await self.journal.update(self._journal_entries(session))

    def _journal_entries(self, first: Session) -> list[JournalEntry]:
        """The entry of a draft with its first stored change, and those of the journal's
        other live drafts with their latest activity (the journal is being written)."""
        entries = [_entry_of(first)]
        for uid, entry in self.journal.entries.items():
            session = self.by_uid.get(uid)
            if session is not None and entry.lost_at is None:
                entries.append(entry.touched(session.last_active))
        return entries

    def start_from_live(self, session: Session) -> None:
        """Move a draft without changes onto the live heads. Nothing is written: the stored
        draft is as empty, and the next `save_edits` records the new base."""
        if session.has_changes():
            raise SessionError("the session has unpublished changes")
        session.discard()

    async def publish(
        self, session: Session, comments: str = "", *, runner: Runner | None = None
    ) -> dict[str, Any]:
        """Durable on this server before it returns (one write), then gossiped. `runner`
        runs the writing of the change (a revert's, in a worker thread)."""
        document_id = session.domain.document_id
        lock = self._publishing.setdefault(document_id, asyncio.Lock())
        async with lock:
            actor = self.actors.acquire(document_id)
            published = await self._write(session, comments, actor, runner)
            # Written to the live document (no await since): held back from gossip and
            # from snapshots until durable. A revert's fork is adopted only once durable.
            held = published.fork is None
            if held:
                self.hub.hold_local(document_id)
                self.persister.publishing.add(document_id)
            try:
                count = await self._make_durable(session, published, actor)
            except BaseException:
                self._end_hold(document_id, held)
                self.documents.changed(document_id)  # peers that asked meanwhile get answers
                raise
            self._end_hold(document_id, held)
            session.published(published)
            self.actors.release(document_id, actor)
        # Off the reply's path: a crash before this rewrite leaves an entry that the next
        # start recognises as published (`lost_drafts.reconcile`).
        self.journal.update_soon(remove=[session.uid])
        self.hub.local_changes(document_id, [published.change])
        self.documents.changed(document_id)
        await self._save_actors()
        await self.persister.compact_if_due(document_id, count)
        return published.revision

    async def _write(
        self, session: Session, comments: str, actor: bytes, runner: Runner | None
    ) -> Published:
        try:
            if runner is None:
                return session.publish(comments, actor)
            return await runner(lambda: session.publish(comments, actor))
        except BaseException:
            self.actors.release(session.domain.document_id, actor)  # nothing was written
            raise

    async def _make_durable(self, session: Session, published: Published, actor: bytes) -> int:
        """Store the publish's change, emptying the stored draft; undo it on failure."""
        document_id = session.domain.document_id
        unsaved = session.take_unsaved_changes()
        try:
            count = await self.storage.publish_changes(
                document_id,
                [published.change],
                session_uid=session.uid,
                base_heads=session.domain.heads(),
                last_active=session.last_active,
            )
        except BaseException:
            session.abort_publish(published)
            session.return_unsaved_changes(unsaved)
            self.actors.retire(actor)
            raise
        self.persister.note_appended(document_id, [published.change])
        return count

    def _end_hold(self, document_id: str, held: bool) -> None:
        if held:
            self.persister.publishing.discard(document_id)
            self.hub.hold_local(document_id, held=False)

    async def _save_actors(self) -> None:
        if self.actors.changed:
            try:
                await self.storage.set_meta(ACTOR_POOL_KEY, self.actors.to_meta())
            except StorageError as exc:  # kept in memory; written with the next change
                self.actors.changed = True
                log.warning("cannot store the publishing actors: %s", exc)

    async def discard(self, session: Session) -> int:
        # The journal first: a crash between the two writes leaves the draft stored and
        # unlisted, which the next start lists again; never an entry for a discarded draft.
        await self.journal.update(remove=[session.uid])
        count = session.discard()
        await self.storage.replace_session_changes(session.uid, session.base_heads, [])
        return count

    async def close(self, session: Session) -> None:
        """Forget a session (logout of a session with nothing unpublished)."""
        await self.journal.update(remove=[session.uid])
        self.by_uid.pop(session.uid, None)
        await self.storage.delete_session(session.uid)

    def forget_domain(self, document_id: str) -> list[Session]:
        """Drop every session of a deleted domain from memory (their rows go with the
        domain's, `Storage.delete_document`)."""
        gone = [s for s in self.by_uid.values() if s.domain.document_id == document_id]
        for session in gone:
            del self.by_uid[session.uid]
        self.journal.update_soon(remove=[session.uid for session in gone])
        return gone


def _entry_of(session: Session) -> JournalEntry:
    return JournalEntry(
        uid=session.uid,
        admin=session.admin,
        domain=session.domain.name,
        document_id=session.domain.document_id,
        since=time.time(),
        last_active=session.last_active,
    )


def _record_of(session: Session) -> SessionRecord:
    return SessionRecord(
        uid=session.uid,
        document_id=session.domain.document_id,
        domain=session.domain.name,
        admin=session.admin,
        name=session.name,
        description=session.description,
        base_heads=session.base_heads,
        actor=b"",
        created_at=session.created_at,
        last_active=session.last_active,
    )
