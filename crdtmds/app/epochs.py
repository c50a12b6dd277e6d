"""Domains rolling into new epochs, on every server (the document side is
`crdtmds.core.epochs`).

After every change of a domain document, a publish here or changes from a peer once
persisted (`after_change`):

- the proposer, the server whose name sorts first in the cluster document, writes the
  cut and the next document's id into the domain's newest document once that epoch
  holds `publishes_per_epoch` revisions;
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

import logging

from crdtmds.app.documents import Documents
from crdtmds.app.persistence import Persister
from crdtmds.core.docdata import new_actor
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
        self._carried: dict[str, list[bytes]] = {}
        """Per earlier epoch's document id, its heads this server has compared with the
        next epoch (carried, or found to hold nothing to carry)."""
        persister.after_domain_change(self.after_change)

    async def after_change(self, document_id: str) -> None:
        """A domain document changed, and the change is on disk here."""
        domain = self.documents.domains.get(document_id)
        if domain is None or not domain.is_domain_document():
            return
        try:
            await self._propose(domain)
            successor = await self._start_next(domain)
            if successor is not None:
                await self._carry(domain, successor)
                await self.after_change(successor.document_id)
        except StorageError:
            raise
        except BaseException as exc:
            if not is_core_error(exc):
                raise
            # The change itself is stored and served; the epoch is tried again next time.
            log.error("epoch step of %s failed in the Automerge core: %r", document_id, exc)

    def _is_proposer(self) -> bool:
        servers = self.documents.cluster.servers()
        return bool(servers) and min(servers) == self.server_name

    async def _propose(self, domain: Domain) -> None:
        if not self._is_proposer():
            return
        if next_epoch(domain.doc) is not None:
            return
        if len(domain.state.revisions) < self.publishes_per_epoch:
            return
        with domain.lock:
            propose_next(
                domain.doc, epoch_number(domain.doc) + 1, domain.document_id, new_document_id()
            )
            change = domain.doc.get_last_local_change()
        if change is not None:
            await self._persisted(domain.document_id, [(change.hash, change.bytes)])
        log.info("domain %s: proposed epoch %d", domain.name, epoch_number(domain.doc) + 1)

    async def _start_next(self, domain: Domain) -> Domain | None:
        """The next epoch of `domain`, started here if it was proposed and is not yet."""
        proposed = next_epoch(domain.doc)
        if proposed is None:
            return None
        cut, document_id = proposed
        successor = self.documents.domains.get(document_id)
        if successor is not None and successor.is_domain_document():
            successor.domain_id = domain.domain_id  # it may have come from a peer first
            return successor
        with domain.lock:
            fresh = start_epoch(domain.doc, cut)
        if successor is None:
            fresh.set_actor(new_actor())
            successor = Domain(document_id, fresh)
            self.documents.add_domain(successor)
            before: list[bytes] = []
        else:  # an empty copy a peer is filling: the same change, merged
            before = successor.doc.get_heads()
            successor.doc.merge(fresh)
        successor.domain_id = domain.domain_id
        changes = [(c.hash, c.bytes) for c in successor.doc.get_changes(before)]
        await self._persisted(document_id, changes)
        log.info("domain %s: started epoch %d", domain.name, cut.epoch)
        return successor

    async def _carry(self, previous: Domain, successor: Domain) -> None:
        if not self._is_proposer():
            return
        heads = previous.heads()
        known = self._carried.get(previous.document_id)
        if known is not None and set(known) == set(heads):
            return
        carried = known or carried_heads(successor.doc, previous.doc)
        if set(carried) == set(heads):
            self._carried[previous.document_id] = heads
            return
        if _content(previous, carried) == _content(previous, heads):
            # Nothing but the proposal itself came after the cut.
            self._carried[previous.document_id] = heads
            return
        with successor.lock:
            before = successor.doc.get_heads()
            carry_late(previous.doc, carried, successor.doc, self.server_name)
            changes = [(c.hash, c.bytes) for c in successor.doc.get_changes(before)]
        self._carried[previous.document_id] = heads
        await self._persisted(successor.document_id, changes)
        log.info("domain %s: carried late publishes into epoch", previous.name)

    async def _persisted(self, document_id: str, changes: list[Change]) -> None:
        """Changes made here to a live document: on disk, then offered to the peers."""
        if not changes:
            return
        await self.persister.persist(document_id, changes)
        self.hub.local_changes(document_id, changes)
        self.documents.changed(document_id)


def _content(domain: Domain, heads: list[bytes]) -> DomainState:
    return domain.state_at(heads)
