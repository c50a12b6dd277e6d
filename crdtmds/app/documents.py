"""The live documents of a server: the cluster document and every domain, by document id.

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

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from automerge.core import Document

from crdtmds.core.cluster import ClusterDocument
from crdtmds.core.domain import Domain
from crdtmds.errors import ObjectNotFound
from crdtmds.sync.peers import PeerInfo


class Documents:
    """The cluster document and the domains of one server."""

    def __init__(self, cluster_document_id: str) -> None:
        self.cluster = ClusterDocument(cluster_document_id, Document())
        self.domains: dict[str, Domain] = {}
        """Every domain document by document id (including empty copies awaiting sync)."""
        self._changed_listeners: list[Callable[[str], None]] = []
        self._cluster_listeners: list[Callable[[], None]] = []
        self._deleted_listeners: list[Callable[[list[str]], None]] = []
        self._updated_listeners: list[Callable[[str, str], None]] = []

    def take_loaded(self, documents: Mapping[str, Document]) -> None:
        """Adopt the documents loaded from storage, then list empty copies of the domains
        the cluster document names but storage lacks."""
        for doc_id, doc in documents.items():
            if doc_id == self.cluster.document_id:
                self.cluster = ClusterDocument(doc_id, doc)
            else:
                self.domains[doc_id] = Domain(doc_id, doc)
        self.forget_deleted()
        self.attach_known_domains()

    # ------------------------------------------------------------ finding documents

    def document(self, document_id: str) -> Document | None:
        """The live Automerge document with this id (cluster document or a domain)."""
        if document_id == self.cluster.document_id:
            return self.cluster.doc
        domain = self.domains.get(document_id)
        return domain.doc if domain else None

    def document_ids(self) -> list[str]:
        return [self.cluster.document_id, *self.domains]

    def domain(self, ref: Any) -> Domain:
        """A domain by name, uid or document id, as listed in the cluster document."""
        entry = self.cluster.domain_by_ref(ref)
        domain = self.domains.get(entry["document-id"])
        if domain is None or not domain.is_domain_document():
            raise ObjectNotFound(
                f"domain '{entry['name']}' has not reached this server yet",
                details={"domain": entry["name"]},
            )
        return domain

    def listed_domain_ids(self) -> set[str]:
        """Document ids of the domains the cluster document lists."""
        return {
            entry["document-id"]
            for entry in self.cluster.domains().values()
            if entry.get("document-id")
        }

    def add_domain(self, domain: Domain) -> None:
        self.domains[domain.document_id] = domain

    def adopt_empty_document(self, document_id: str) -> Document:
        """An empty local copy of a document a trusted peer is about to send."""
        if document_id == self.cluster.document_id:
            return self.cluster.doc
        domain = self.domains.get(document_id)
        if domain is None:
            domain = self.domains[document_id] = Domain(document_id, Document())
        return domain.doc

    def forget_deleted(self) -> list[str]:
        """Drop the live copies of tombstoned domains; tell the listeners which."""
        deleted = [doc_id for doc_id in self.domains if self.cluster.is_deleted(doc_id)]
        for doc_id in deleted:
            del self.domains[doc_id]
        if deleted:
            for listener in self._deleted_listeners:
                listener(deleted)
        return deleted

    def attach_known_domains(self) -> list[str]:
        """Empty copies of domains the cluster document lists but this server lacks."""
        missing = [
            entry["document-id"]
            for entry in self.cluster.domains().values()
            if entry.get("document-id") and entry["document-id"] not in self.domains
        ]
        for doc_id in missing:
            self.adopt_empty_document(doc_id)
        return missing

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
        if not peer.is_server or self.cluster.is_deleted(document_id):
            return None
        return self.adopt_empty_document(document_id)

    def shared_documents(self, peer: PeerInfo) -> Iterable[str]:
        """Servers are offered everything; repo clients ask for what they want."""
        return self.document_ids() if peer.is_server else []
