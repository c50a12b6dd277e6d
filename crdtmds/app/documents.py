"""The live documents of a server: the cluster document and every domain, by document id.

Domains are loaded on first use: a server starts with the catalogue of stored domains
(`take_catalogue`) and loads a domain's document when something asks for it -- an API
call (`domain`), a peer's or client's sync message (`get_document`), a change arriving.
Loaded domains are unloaded least recently used first past the limits of
`crdtmds.app.residency.Residency`, never while busy (a session open on it, a sync in
flight, changes not yet on disk: the predicates given to `residency.pin_while`). An
unloaded domain keeps its heads in `stored_heads`, so that its heads are known without a
load; `on_unloaded` listeners record them.

Every other service finds documents here, and learns of changes through its listeners:
`on_changed(document_id)` after every persisted change a server made itself (a publish, a
cluster write; gossip then offers it to the peers), `on_updated(document_id, origin)`
after every persisted change whatever its origin (here or a peer: the console's live
view), and `on_cluster_updated()` whenever
the cluster document changed, from here or from a peer (the mesh then dials new servers;
logins of administrators now deleted or locked end), and `on_domains_deleted(ids)` when
domains this server held got a tombstone (their rows and sessions are then removed).
It is also the document store of the gossip hub (`get_document`, `accept_document`,
`shared_documents`): a tombstoned document is neither served nor accepted again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from automerge.core import Document

from crdtmds.app.epoch_index import EpochIndex
from crdtmds.app.residency import Residency
from crdtmds.core.cluster import ClusterDocument
from crdtmds.core.domain import Domain
from crdtmds.core.epochs import EpochChain
from crdtmds.errors import ObjectNotFound
from crdtmds.sync.peers import PeerInfo

log = logging.getLogger("crdtmds.documents")

Loader = Callable[[str], "tuple[Document, int] | None"]
"""Loads a stored document: the document and its stored size in bytes, or None."""


def _nothing_stored(_document_id: str) -> tuple[Document, int] | None:
    return None


class DomainTable(Mapping[str, Domain]):
    """The domains of a server by document id, loaded as they are looked up. Iterating
    or `values()` loads every domain: use `Documents.loaded_domains` for those in memory."""

    def __init__(self, documents: Documents) -> None:
        self._documents = documents

    def __getitem__(self, document_id: str) -> Domain:
        domain = self._documents.load_domain(document_id)
        if domain is None:
            raise KeyError(document_id)
        return domain

    def __contains__(self, document_id: object) -> bool:
        return isinstance(document_id, str) and self._documents.holds(document_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._documents.domain_ids())

    def __len__(self) -> int:
        return len(self._documents.domain_ids())


class Documents:
    """The cluster document and the domains of one server."""

    def __init__(
        self,
        cluster_document_id: str,
        *,
        loader: Loader = _nothing_stored,
        residency: Residency | None = None,
    ) -> None:
        self.cluster = ClusterDocument(cluster_document_id, Document())
        self.residency = residency if residency is not None else Residency()
        self._loader = loader
        self._loaded: dict[str, Domain] = {}
        """The domains in memory (including empty copies awaiting sync)."""
        self.stored_heads: dict[str, list[bytes] | None] = {}
        """Domains stored and not loaded, with their heads when known."""
        self.domains = DomainTable(self)
        self.epochs = EpochIndex(self.load_domain, self.holds)
        """Links between a domain's epoch documents (`crdtmds.core.epochs`)."""
        self.loads = 0
        """Domains loaded from storage since start (tests and benchmarks)."""
        self._changed_listeners: list[Callable[[str], None]] = []
        self._cluster_listeners: list[Callable[[], None]] = []
        self._deleted_listeners: list[Callable[[list[str]], None]] = []
        self._updated_listeners: list[Callable[[str, str], None]] = []
        self._loaded_listeners: list[Callable[[str], None]] = []
        self._unloaded_listeners: list[Callable[[str, list[bytes]], None]] = []

    def take_loaded(self, documents: Mapping[str, Document]) -> None:
        """Adopt documents loaded from storage, then list empty copies of the domains
        the cluster document names but storage lacks."""
        for doc_id, doc in documents.items():
            if doc_id == self.cluster.document_id:
                self.cluster = ClusterDocument(doc_id, doc)
            else:
                self._install(Domain(doc_id, doc), 0)
        self.forget_deleted()
        self.attach_known_domains()

    def take_catalogue(self, cluster: Document, stored: Mapping[str, list[bytes] | None]) -> None:
        """Start from the cluster document and the ids (and known heads) of the stored
        domains, none loaded."""
        if cluster is not self.cluster.doc:
            self.cluster = ClusterDocument(self.cluster.document_id, cluster)
        for doc_id, heads in stored.items():
            if doc_id != self.cluster.document_id:
                self.stored_heads[doc_id] = heads
        self.forget_deleted()
        self.attach_known_domains()

    # ------------------------------------------------------------ finding documents

    def document(self, document_id: str) -> Document | None:
        """The live Automerge document with this id (cluster document or a domain),
        loaded if stored."""
        if document_id == self.cluster.document_id:
            return self.cluster.doc
        domain = self.load_domain(document_id)
        return domain.doc if domain else None

    def load_domain(self, document_id: str) -> Domain | None:
        """The domain with this document id, loaded if stored; None if not held here."""
        domain = self._loaded.get(document_id)
        if domain is not None:
            self.residency.used(document_id)
            return domain
        if document_id not in self.stored_heads or self.is_deleted(document_id):
            return None
        loaded = self._loader(document_id)
        del self.stored_heads[document_id]
        if loaded is None:
            return None
        self.loads += 1
        log.debug("loaded domain %s (%d stored bytes)", document_id, loaded[1])
        domain = self._install(Domain(document_id, loaded[0]), loaded[1])
        for listener in self._loaded_listeners:
            listener(document_id)
        self.unload_over_limits(keep=document_id)
        return domain

    def holds(self, document_id: str) -> bool:
        """Whether this server holds the domain, loaded or not."""
        return document_id in self._loaded or document_id in self.stored_heads

    def is_loaded(self, document_id: str) -> bool:
        return document_id in self._loaded

    def loaded_domains(self) -> list[Domain]:
        return list(self._loaded.values())

    def domain_ids(self) -> list[str]:
        """Every domain held here, loaded or not."""
        return [*self._loaded, *(i for i in self.stored_heads if i not in self._loaded)]

    def heads_of(self, document_id: str) -> list[bytes] | None:
        """A document's heads without loading it; None when not held or not known."""
        if document_id == self.cluster.document_id:
            return self.cluster.doc.get_heads()
        domain = self._loaded.get(document_id)
        if domain is not None:
            return domain.heads()
        return self.stored_heads.get(document_id)

    def document_ids(self) -> list[str]:
        return [self.cluster.document_id, *self.domain_ids()]

    def domain(self, ref: Any) -> Domain:
        """A domain by name, uid or document id, as listed in the cluster document: the
        document of its newest epoch here (`current_epoch`)."""
        entry = self.cluster.domain_by_ref(ref)
        ids = self.epochs.held_chain_ids(entry["document-id"])
        domain = self.load_domain(ids[-1])
        if (domain is None or not domain.is_domain_document()) and len(ids) > 1:
            domain = self.load_domain(entry["document-id"])
        if domain is None or not domain.is_domain_document():
            raise ObjectNotFound(
                f"domain '{entry['name']}' has not reached this server yet",
                details={"domain": entry["name"]},
            )
        return self.current_epoch(domain)

    def current_epoch(self, domain: Domain) -> Domain:
        """The newest epoch of `domain` this server has started (`EpochIndex.current`)."""
        return self.epochs.current(domain)

    def epoch_chain(self, domain: Domain) -> EpochChain:
        """The documents of every epoch of `domain` here, oldest first."""
        return self.epochs.chain(domain)

    def is_deleted(self, document_id: str) -> bool:
        """Whether the domain of this document (of any of its epochs) is tombstoned."""
        cluster = self.cluster
        return cluster.is_deleted(document_id) or cluster.is_deleted(
            self.epochs.domain_id(document_id)
        )

    def listed_domain_ids(self) -> set[str]:
        """Document ids of the domains the cluster document lists."""
        return {
            entry["document-id"]
            for entry in self.cluster.domains().values()
            if entry.get("document-id")
        }

    def add_domain(self, domain: Domain) -> None:
        self._install(domain, 0)
        self.unload_over_limits(keep=domain.document_id)

    def adopt_empty_document(self, document_id: str) -> Document:
        """An empty local copy of a document a trusted peer is about to send."""
        if document_id == self.cluster.document_id:
            return self.cluster.doc
        domain = self.load_domain(document_id)
        if domain is None:
            domain = self._install(Domain(document_id, Document()), 0)
        return domain.doc

    def forget_deleted(self) -> list[str]:
        """Drop the live copies of tombstoned domains; tell the listeners which."""
        deleted = [doc_id for doc_id in self.domain_ids() if self.is_deleted(doc_id)]
        for doc_id in deleted:
            self._loaded.pop(doc_id, None)
            self.stored_heads.pop(doc_id, None)
            self.residency.forget(doc_id)
        if deleted:
            for listener in self._deleted_listeners:
                listener(deleted)
        return deleted

    def attach_known_domains(self) -> list[str]:
        """Empty copies of domains the cluster document lists but this server lacks."""
        missing = [
            entry["document-id"]
            for entry in self.cluster.domains().values()
            if entry.get("document-id") and not self.holds(entry["document-id"])
        ]
        for doc_id in missing:
            self.adopt_empty_document(doc_id)
        return missing

    # ------------------------------------------------------------ unloading

    def unload_over_limits(self, keep: str | None = None) -> list[str]:
        """Unload the least recently used domains past the limits (never busy ones)."""
        victims = self.residency.victims(keep)
        for document_id in victims:
            self.unload(document_id)
        return victims

    def unload(self, document_id: str) -> bool:
        """Drop a loaded domain from memory (its changes are all stored: the caller
        checked it is not busy). An empty copy that never got data is just dropped."""
        domain = self._loaded.pop(document_id, None)
        self.residency.forget(document_id)
        if domain is None:
            return False
        heads = domain.heads()
        if heads:
            self.stored_heads[document_id] = heads
            for listener in self._unloaded_listeners:
                listener(document_id, heads)
        return True

    def _install(self, domain: Domain, stored_bytes: int) -> Domain:
        self.epochs.learn(domain)
        self._loaded[domain.document_id] = domain
        self.residency.loaded(domain.document_id, stored_bytes)
        return domain

    # ------------------------------------------------------------ change events

    def on_changed(self, listener: Callable[[str], None]) -> None:
        """Call `listener(document_id)` after every change this server makes itself."""
        self._changed_listeners.append(listener)

    def on_cluster_updated(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever the cluster document changed, here or by a peer."""
        self._cluster_listeners.append(listener)

    def on_domains_deleted(self, listener: Callable[[list[str]], None]) -> None:
        """Call `listener(document_ids)` when domains held here got a tombstone (they
        are gone from `domains` already); also for stored ones at load."""
        self._deleted_listeners.append(listener)

    def on_updated(self, listener: Callable[[str, str], None]) -> None:
        """Call `listener(document_id, origin)` after every persisted change to a live
        document: `origin` is "here" for a change this server made, "peer" for one
        received."""
        self._updated_listeners.append(listener)
    def on_loaded(self, listener: Callable[[str], None]) -> None:
        """Call `listener(document_id)` when a stored domain was loaded."""
        self._loaded_listeners.append(listener)

    def on_unloaded(self, listener: Callable[[str, list[bytes]], None]) -> None:
        """Call `listener(document_id, heads)` when a domain left memory."""
        self._unloaded_listeners.append(listener)

    def changed(self, document_id: str) -> None:
        """A change this server made to a live document is persisted: tell the listeners."""
        self._notify(document_id)
        self._tell_updated(document_id, "here")
        if document_id == self.cluster.document_id:
            self.cluster_updated()

    def received(self, document_id: str) -> None:
        """Changes a peer sent to a live document are persisted: tell the listeners."""
        self._tell_updated(document_id, "peer")
        if document_id == self.cluster.document_id:
            self.cluster_updated()

    def _tell_updated(self, document_id: str, origin: str) -> None:
        for listener in self._updated_listeners:
            listener(document_id, origin)

    def cluster_updated(self) -> None:
        """Drop tombstoned domains, ask peers for newly listed ones, then tell the cluster
        listeners."""
        self.forget_deleted()
        for doc_id in self.attach_known_domains():
            self._notify(doc_id)
        for listener in self._cluster_listeners:
            listener()

    def _notify(self, document_id: str) -> None:
        for listener in self._changed_listeners:
            listener(document_id)

    # ------------------------------------------------------------ the gossip hub's store

    def get_document(self, document_id: str) -> Document | None:
        return self.document(document_id)

    def accept_document(self, document_id: str, peer: PeerInfo) -> Document | None:
        """Servers may hand us any document of the cluster but a deleted one; repo
        clients create none."""
        if not peer.is_server or self.is_deleted(document_id):
            return None
        return self.adopt_empty_document(document_id)

    def shared_documents(self, peer: PeerInfo) -> Iterable[str]:
        """Servers are offered everything; repo clients ask for what they want."""
        return self.document_ids() if peer.is_server else []
