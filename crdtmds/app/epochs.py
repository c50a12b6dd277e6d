"""Domains rolling into new epochs, on every server (the document side is
`crdtmds.core.epochs`).

After every change of a domain document, a publish here or changes from a peer once
persisted (`after_change`):

- the proposer, the server whose name sorts first in the cluster document, writes the
  cut and the next document's id into the domain's newest document once that epoch
  holds `epoch_length` revisions;
- every server that holds that record (and so the cut, which it follows) starts the next
  epoch's document, the same change on every server, and persists it;
- what an earlier epoch's document gained after its cut (a publish of a server that had
  not seen the record yet, or of a draft opened before it) is carried into the next
  epoch by the proposer, as if published then.

One proposer keeps two cuts of one epoch from racing, and one carrier keeps a late
publish from being written twice (a second carrier, later, would undo edits made since
the first). If the proposer is cut off, domains do not roll and late publishes wait in
the previous epoch's document (on every server) until it is back. A server that has not
started an epoch yet goes on publishing into the one before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from crdtmds.app.documents import Documents
from crdtmds.app.epoch_index import EPOCH_LINKS_KEY
from crdtmds.app.persistence import Persister
from crdtmds.core.docdata import change_rows, new_actor
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.epochs import (
    carried_heads,
    carry_late,
    epoch_number,
    next_epoch,
    propose_next,
    start_epoch,
)
from crdtmds.errors import StorageError, is_core_error
from crdtmds.sync.gossip import Gossip
from crdtmds.sync.protocol import new_document_id

log = logging.getLogger("crdtmds.epochs")

Change = tuple[bytes, bytes]


class Epochs:
    """Proposes cuts, starts epochs and carries late publishes, for one server."""

    def __init__(
        self,
        documents: Documents,
        persister: Persister,
        hub: Gossip,
        server_name: str,
        publishes_per_epoch: int,
    ) -> None:
        self.documents = documents
        self.persister = persister
        self.hub = hub
        self.server_name = server_name
        self.publishes_per_epoch = publishes_per_epoch
        self._dirty: list[str] = []
        """Domain documents changed since the worker last looked at them, in order."""
        self._worker: asyncio.Task[None] | None = None
        self.background: set[asyncio.Task[None]] = set()
        """The worker while it runs (the server awaits it when it stops)."""
        self._busy: set[str] = set()
        documents.residency.pin_while(self.is_busy)
        self._carried: dict[str, list[bytes]] = {}
        """Per earlier epoch's document id, its heads this server has compared with the
        next epoch (carried, or found to hold nothing to carry)."""
        documents.on_updated(self.after_change)

    def after_change(self, document_id: str, _origin: str = "here") -> None:
        """A domain document changed, and the change is on disk here. The epoch steps run
        in the background, one at a time: starting an epoch or carrying into one reads a
        whole domain (seconds at 10,000 rules), which no publish's reply should wait for."""
        if document_id == self.documents.cluster.document_id:
            return
        if document_id not in self._dirty:
            self._dirty.append(document_id)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())
            self.background.add(self._worker)
            self._worker.add_done_callback(self.background.discard)

    async def idle(self) -> None:
        """Wait until the worker has nothing left to do."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)

    async def _work(self) -> None:
        while self._dirty:
            document_id = self._dirty.pop(0)
            try:
                await self._step(document_id)
            except StorageError as exc:
                # Nothing of the step was offered to a peer: it is tried again next time.
                log.error("epoch step of %s not stored: %s", document_id, exc)
            except BaseException as exc:
                if not is_core_error(exc):
                    raise
                log.error("epoch step of %s failed in the Automerge core: %r", document_id, exc)
            finally:
                self._busy.clear()

    def is_pending(self, document_id: str) -> bool:
        """Whether a step on the document is waiting or running (`status` says so)."""
        return document_id in self._dirty or document_id in self._busy

    def is_busy(self, document_id: str) -> bool:
        """Whether the worker's step uses the document (it stays loaded meanwhile: a
        change merged into a copy unloaded and loaded again would miss the live one)."""
        return document_id in self._busy

    async def _step(self, document_id: str) -> None:
        if not self.documents.is_loaded(document_id):
            return  # unloaded since: a step reads only what just changed, in memory
        domain = self.documents.domains.get(document_id)
        if domain is None or not domain.is_domain_document():
            return
        self._busy.add(document_id)
        self.documents.epochs.learn(domain)
        await self._propose(domain)
        successor = await self._start_next(domain)
        if successor is not None:
            self._busy.add(successor.document_id)
            await self._carry(domain, successor)
            await self._step(successor.document_id)

    def epoch_length(self, state: DomainState) -> int:
        """Publishes an epoch of this domain holds before the next one is proposed.

        Starting an epoch writes the whole domain once on every server (~6 s of CPU at
        10,000 rules), so a large domain's epochs last longer: half as many publishes as
        it has objects and rules keeps that below ~1 ms per publish."""
        content = len(state.objects) + sum(len(layer.rules) for layer in state.layers.values())
        return max(self.publishes_per_epoch, content // 2)

    def _is_proposer(self) -> bool:
        servers = self.documents.cluster.servers()
        return bool(servers) and min(servers) == self.server_name

    async def _propose(self, domain: Domain) -> None:
        if not self._is_proposer():
            return
        if next_epoch(domain.doc) is not None:
            return
        if len(domain.state.revisions) < self.epoch_length(domain.state):
            return
        with domain.lock:
            propose_next(
                domain.doc, epoch_number(domain.doc) + 1, domain.document_id, new_document_id()
            )
            change = domain.doc.get_last_local_change()
        if change is not None:
            await self._store_then_apply(
                domain.document_id, [(change.hash, change.bytes)], lambda: None
            )
        log.info("domain %s: proposed epoch %d", domain.name, epoch_number(domain.doc) + 1)

    async def _start_next(self, domain: Domain) -> Domain | None:
        """The next epoch of `domain`, started here if it was proposed and is not yet."""
        proposed = next_epoch(domain.doc)
        if proposed is None:
            return None
        cut, document_id = proposed
        if (held := await self._held_epoch(document_id)) is not None:
            return held  # it may have come from a peer first
        # Seconds on a large domain (a read at the cut, one write per field): off the event
        # loop, on a copy, since gossip may write the live document meanwhile.
        with domain.lock:
            copy = domain.doc.fork()
        fresh = await asyncio.to_thread(start_epoch, copy, cut)
        if (held := await self._held_epoch(document_id)) is not None:
            return held  # it came from a peer meanwhile
        fresh.set_actor(new_actor())
        self._busy.add(document_id)
        documents = self.documents

        def install() -> None:
            # Looked up again: a peer may have delivered the document during the write
            # (an empty copy it fills, where sessions may publish already). It is merged
            # into, never replaced.
            held = documents.domains.get(document_id) if documents.holds(document_id) else None
            if held is None:
                documents.add_domain(Domain(document_id, fresh))
            else:
                with held.lock:
                    held.doc.merge(fresh)

        await self._store_then_apply(document_id, change_rows(fresh), install)
        successor = documents.domains.get(document_id)
        if successor is None:
            return None
        documents.epochs.learn(successor)
        await self._save_links()
        log.info("domain %s: started epoch %d", domain.name, cut.epoch)
        return successor

    async def _held_epoch(self, document_id: str) -> Domain | None:
        """The epoch's document if this server holds it started already (the links
        saved), else None."""
        held = self.documents.domains.get(document_id)
        if held is None or not held.is_domain_document():
            return None
        await self._save_links()
        return held

    async def _carry(self, previous: Domain, successor: Domain) -> None:
        if not self._is_proposer():
            return
        heads = previous.heads()
        known = self._carried.get(previous.document_id)
        if known is not None and set(known) == set(heads):
            return
        # Whole reads at two heads and of the epoch: off the event loop, on copies (the
        # copy of the epoch writes as an actor of its own), then merged into the live one.
        with previous.lock, successor.lock:
            old, new = previous.doc.fork(), successor.doc.fork()
        new.set_actor(new_actor())
        carried = known or carried_heads(new, old)
        before = new.get_heads()
        heads = await asyncio.to_thread(carry_late, old, carried, new, self.server_name)
        changes = change_rows(new, before)
        if changes:

            def merge() -> None:
                with successor.lock:
                    successor.doc.merge(new)

            await self._store_then_apply(successor.document_id, changes, merge)
            log.info("domain %s: carried late publishes into epoch", previous.name)
        self._carried[previous.document_id] = heads

    async def _save_links(self) -> None:
        """The links between epoch documents, for finding the newest without loading
        the others after a restart (`crdtmds.app.epoch_index`)."""
        index = self.documents.epochs
        if index.changed:
            await self.persister.storage.set_meta(EPOCH_LINKS_KEY, index.to_meta())

    async def _store_then_apply(
        self, document_id: str, changes: list[Change], apply: Callable[[], object]
    ) -> None:
        """Changes made here, in the order a publish keeps: on disk, into the live
        document (`apply`), offered to the peers, then compaction if due (never before
        the live document holds what the snapshot covers)."""
        count = await self.persister.storage.append_changes(document_id, changes)
        self.persister.note_appended(document_id, changes)
        apply()
        self.hub.local_changes(document_id, changes)
        self.documents.changed(document_id)
        await self.persister.compact_if_due(document_id, count)

