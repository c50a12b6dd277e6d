"""What `show-status` and `crdtmds status` report of one server: who it is, whom it is
linked with, and the heads of every document it holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from crdtmds.app.documents import Documents
from crdtmds.config import ServerConfig
from crdtmds.core import auth
from crdtmds.core.docdata import has_heads


@dataclass(frozen=True, slots=True)
class Connections:
    """The network side's account of this server's open links."""

    peers: list[str] = field(default_factory=list)
    """Names of the servers with a live, authenticated link."""
    servers: int = 0
    """Links with servers (one server may have two for a moment)."""
    repo_clients: int = 0
    """Links with administrators' automerge-repo clients."""


class StatusView:
    """This server's own view. `connections` is handed in by the network side (the
    application knows nothing of sockets); until then it reports none."""

    def __init__(self, config: ServerConfig, documents: Documents) -> None:
        self.config = config
        self.documents = documents
        self.connections: Callable[[], Connections] = Connections
        self.web_api: dict[str, str] | None = None
        """The Web API door's URL and certificate fingerprints, once it listens."""
        self.heard: dict[str, float] = {}
        """When each other server last answered a status query from here (wall clock)."""
        self.epoch_pending: Callable[[str], bool] = lambda _document_id: False
        """Whether the epoch worker (`app/epochs.py`) has a step to run on a document."""

    def note_heard(self, names: Iterable[str]) -> None:
        now = time.time()
        self.heard.update(dict.fromkeys(names, now))

    def changes_missing(self, document_id: str, heads: list[str]) -> int | None:
        """How many changes of the document this server holds that a server at `heads`
        (hex) lacks: 0 when the heads are this server's; None when they name changes
        this server does not hold (this one is behind). `heads` cover every epoch's
        document of the domain (`domain_heads`): each is compared with its own."""
        try:
            wanted = {bytes.fromhex(h) for h in heads}
        except (TypeError, ValueError):
            return None
        missing = 0
        for epoch_document in self.documents.epochs.held_chain_ids(document_id):
            doc = self.documents.document(epoch_document)
            if doc is None:
                return None
            mine = set(doc.get_heads())
            theirs = {h for h in wanted if h in mine or has_heads(doc, [h])}
            wanted -= theirs
            if theirs != mine:
                missing += len(doc.get_changes(sorted(theirs)))
        return None if wanted else missing

    def health(self) -> dict[str, Any]:
        """What anyone may know without a login: the server is up (a load balancer's
        health check), nothing that names the cluster's servers, domains or documents."""
        return {"status": "up", "details": "log in (or give a status-token) for the rest"}

    def issue_token(self, admin: str) -> str:
        """A status token for a logged-in administrator (`auth.status_token`)."""
        return auth.status_token(self.config.secret, admin)

    def token_opens(self, token: Any) -> bool:
        """Whether a status token from any server of the cluster is valid, and its
        administrator still has access."""
        admin = auth.status_token_admin(self.config.secret, token)
        return admin is not None and self.documents.cluster.permission(admin, None) is not None

    def domain_heads(self) -> dict[str, dict[str, Any]]:
        """Per domain name: document id, the document of its newest epoch here, and the
        sorted hex heads of all its epochs' documents on this server (known without a
        load unless a crash lost a document's record of them)."""
        result: dict[str, dict[str, Any]] = {}
        documents = self.documents
        for name, entry in sorted(documents.cluster.domains().items()):
            document_id = entry.get("document-id", "")
            heads: list[str] = []
            newest = None
            chain = documents.epochs.held_chain_ids(document_id)
            for epoch_document in chain:
                known = self._heads(epoch_document)
                heads.extend(h.hex() for h in known)
                newest = epoch_document if known else newest
            # A start or a carry still to run: equal heads everywhere are not the end yet.
            settled = not any(self.epoch_pending(d) for d in chain)
            result[name] = {"document-id": entry.get("document-id"), "heads": sorted(heads),
                            "epoch-document-id": newest, "epochs-settled": settled}  # fmt: skip
        return result

    def _heads(self, document_id: str) -> list[bytes]:
        known = self.documents.heads_of(document_id)
        if known is None:
            doc = self.documents.document(document_id)
            known = doc.get_heads() if doc is not None else []
        return known

    def local_status(self) -> dict[str, Any]:
        """Identity, connections and the heads of every document."""
        config, cluster = self.config, self.documents.cluster
        servers = [
            {key: entry.get(key) for key in ("name", "url", "region", "role")}
            for _, entry in sorted(cluster.servers().items())
        ]
        links = self.connections()
        return {
            "status": "up",
            "name": config.name,
            "region": config.region,
            "role": config.role,
            "url": config.url,
            "web-api": self.web_api,
            "cluster-id": config.cluster_id,
            "peers": links.peers,
            "connections": {"servers": links.servers, "repo-clients": links.repo_clients},
            "servers": servers,
            "domains": self.domain_heads(),
            "domains_loaded": len(self.documents.loaded_domains()),
            "domains_total": len(self.documents.domain_ids()),
            "cluster-document": {
                "document-id": cluster.document_id,
                "heads": sorted(h.hex() for h in cluster.doc.get_heads()),
            },
        }
