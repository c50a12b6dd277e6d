"""Which document follows which among a domain's epochs (`crdtmds.core.epochs`), known
without loading them.

A domain's epochs are documents of their own, loaded on first use like any domain
(`crdtmds.app.documents`). Finding the newest epoch by reading each document's
next-epoch record would load every earlier one; this index keeps the links (previous
document -> next document) in memory, learnt from every document loaded or changed here
(`learn`), and in the meta table across restarts (`to_meta`, written by
`crdtmds.app.epochs.Epochs` when a link is new).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.draft import PastRevision
from crdtmds.core.epochs import EpochChain, cut_of, next_epoch

EPOCH_LINKS_KEY = "epoch-links"
"""Meta key of the links: {previous document id: next document id}."""

Loader = Callable[[str], "Domain | None"]


class EpochIndex:
    """The links between a server's epoch documents."""

    def __init__(self, load: Loader, holds: Callable[[str], bool]) -> None:
        self._load = load
        self._holds = holds
        self._next: dict[str, str] = {}
        self._previous: dict[str, str] = {}
        self.changed = False
        """Links learnt since the last `to_meta`."""

    def from_meta(self, value: Any) -> None:
        if isinstance(value, Mapping):
            for previous, following in value.items():
                if isinstance(previous, str) and isinstance(following, str):
                    self._link(previous, following)
        self.changed = False

    def to_meta(self) -> dict[str, str]:
        self.changed = False
        return dict(self._next)

    def learn(self, domain: Domain) -> None:
        """Read the links `domain`'s document records; set its `domain_id`."""
        proposed = next_epoch(domain.doc)
        if proposed is not None:
            self._link(domain.document_id, proposed[1])
        cut = cut_of(domain.doc)
        if cut is not None:
            self._link(cut.previous_document, domain.document_id)
        domain.domain_id = self.domain_id(domain.document_id)

    def _link(self, previous: str, following: str) -> None:
        if self._next.get(previous) != following:
            self._next[previous] = following
            self._previous[following] = previous
            self.changed = True

    def domain_id(self, document_id: str) -> str:
        """The id of the domain's first document, which the cluster document lists."""
        seen = {document_id}
        while (previous := self._previous.get(document_id)) is not None and previous not in seen:
            seen.add(previous)
            document_id = previous
        return document_id

    def chain_ids(self, document_id: str) -> list[str]:
        """Ids of the epoch documents from `document_id` on, as far as links are known."""
        ids = [document_id]
        while (following := self._next.get(ids[-1])) is not None and following not in ids:
            ids.append(following)
        return ids

    def held_chain_ids(self, document_id: str) -> list[str]:
        """`chain_ids` up to the last document this server holds."""
        ids = self.chain_ids(document_id)
        while len(ids) > 1 and not self._holds(ids[-1]):
            ids.pop()
        return ids

    def current(self, domain: Domain) -> Domain:
        """The newest epoch of `domain` this server has started: until it holds the next
        epoch's document, publishes go to the one before. Loads only that document (and,
        for links not known yet, the ones before it)."""
        ids = self.chain_ids(domain.document_id)
        for document_id in reversed(ids[1:]):
            if (newer := self._started(document_id)) is not None:
                self.learn(newer)
                domain = newer
                break
        # A link the index did not know yet (a record that came with a change).
        while (proposed := next_epoch(domain.doc)) is not None:
            self._link(domain.document_id, proposed[1])
            if (newer := self._started(proposed[1])) is None:
                break
            self.learn(newer)
            domain = newer
        return domain

    def _started(self, document_id: str) -> Domain | None:
        """The epoch document `document_id`, loaded, if this server holds it started."""
        loaded = self._load(document_id) if self._holds(document_id) else None
        return loaded if loaded is not None and loaded.is_domain_document() else None

    def chain(self, domain: Domain) -> EpochChain:
        """The documents of every epoch of `domain` this server has started, oldest first
        (each loaded: for reading revisions across epochs)."""
        first = self._load(self.domain_id(domain.document_id)) or domain
        documents = [first]
        newest = self.current(first)
        for document_id in self.chain_ids(first.document_id)[1:]:
            if (loaded := self._started(document_id)) is None:
                break
            documents.append(loaded)
            if loaded is newest:
                break
        return EpochChain([d.doc for d in documents])

    def past_revision(self, domain: Domain) -> PastRevision:
        """Revisions of the domain's earlier epochs, for a stored revert to one (read on
        the event loop, where a draft is restored)."""

        def past(uid: str) -> tuple[dict[str, Any], DomainState] | None:
            chain = self.chain(domain)
            revision = next((r for r in chain.revisions() if r.get("uid") == uid), None)
            return (revision, chain.state_of(revision)) if revision is not None else None

        return past
