"""What a server does when the cluster document takes something away: an administrator
deleted or locked, a domain deleted. It runs on every server alike, whichever server the
change was made on, as soon as the change reaches it.

- Logins of an administrator now deleted or locked, and logins to a deleted domain, end
  at once (`Logins.drop_revoked`); their `sid`s are refused from then on.
- Sessions: a deleted administrator's drafts are discarded, with changes or not (nobody
  can continue them); a locked administrator's drafts with unpublished changes are kept
  on disk for `continue-last-session` once unlocked, empty ones are closed.
- A deleted domain's document leaves memory at once (`Documents.forget_deleted`), then
  its stored rows and drafts are removed from storage (`Storage.delete_document`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from crdtmds.app.documents import Documents
from crdtmds.app.logins import Logins
from crdtmds.app.persistence import Persister
from crdtmds.app.sessions import Sessions
from crdtmds.errors import CrdtmdsError

log = logging.getLogger("crdtmds.lifecycle")


class Lifecycle:
    """Listens to the cluster document and ends what it no longer allows."""

    def __init__(
        self, documents: Documents, sessions: Sessions, logins: Logins, persister: Persister
    ) -> None:
        self.documents = documents
        self.sessions = sessions
        self.logins = logins
        self.persister = persister
        self._tasks: set[asyncio.Task[None]] = set()
        documents.on_domains_deleted(self._domains_deleted)
        documents.on_cluster_updated(self._cluster_updated)

    async def settled(self) -> None:
        """Wait for the clean-ups under way (tests; a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ listeners

    def _cluster_updated(self) -> None:
        revoked = self.logins.drop_revoked()
        administrators = self.documents.cluster.administrators()
        orphans = [
            session
            for session in self.sessions.by_uid.values()
            if session.admin not in administrators and not self.logins.attached(session.uid)
        ]
        if revoked or orphans:
            self._spawn(self._settle_sessions(revoked, orphans))

    def _domains_deleted(self, document_ids: list[str]) -> None:
        self._spawn(self._purge(document_ids))

    # ------------------------------------------------------------ clean-ups

    async def _settle_sessions(self, revoked: list[Any], orphans: list[Any]) -> None:
        await self.logins.close_sessions_of(revoked)
        for session in orphans:
            if session.uid in self.sessions.by_uid and not self.logins.attached(session.uid):
                log.info("discarding session %s of deleted administrator %r",
                         session.uid, session.admin)  # fmt: skip
                await self.sessions.close(session)

    async def _purge(self, document_ids: list[str]) -> None:
        for document_id in document_ids:
            self.sessions.forget_domain(document_id)
            self.persister.forget(document_id)
            removed = await self.sessions.storage.delete_document(document_id)
            log.info("deleted domain document %s removed (%d stored rows)", document_id, removed)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(_logged(work))
        except RuntimeError:  # no event loop (a synchronous test): nothing can be awaited
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except CrdtmdsError as exc:
        log.error("clean-up after a cluster change failed (tried again at the next start): %s", exc)
