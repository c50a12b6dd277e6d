"""Writes to the cluster document: this server's own entry, new domains and new
administrators. Each write is persisted before the listeners hear of it."""

from __future__ import annotations

import asyncio
from typing import Any

from crdtmds.app.documents import Documents
from crdtmds.app.persistence import Change, Persister
from crdtmds.config import Limits, ServerConfig
from crdtmds.core import auth
from crdtmds.core.domain import Domain
from crdtmds.errors import NameInUse
from crdtmds.sync.protocol import new_document_id


class ClusterAdmin:
    """The cluster document's writer on this server."""

    def __init__(
        self, config: ServerConfig, limits: Limits, documents: Documents, persister: Persister
    ) -> None:
        self.config = config
        self.limits = limits
        self.documents = documents
        self.persister = persister

    async def register_self(self) -> None:
        """Make sure this server is listed in the cluster document with its current URL."""
        cluster, config = self.documents.cluster, self.config
        if not cluster.is_ready():
            return
        entry = cluster.servers().get(config.name)
        wanted = (config.url, config.region, config.role)
        if entry is None or (entry.get("url"), entry.get("region"), entry.get("role")) != wanted:
            await self._write(
                cluster.add_server(config.name, config.url, config.region, config.role)
            )

    async def create_domain(self, name: str, *, created_by: str) -> dict[str, Any]:
        """A new domain: its document (persisted first) and its cluster entry."""
        cluster = self.documents.cluster
        document_id = new_document_id()
        domain = Domain.create(name, document_id)
        if domain.name in cluster.domains():
            raise NameInUse(f"domain '{domain.name}' already exists", details={"name": name})
        changes = [(c.hash, c.bytes) for c in domain.doc.get_changes([])]
        await self.persister.persist(document_id, changes)
        self.documents.add_domain(domain)
        entry = cluster.add_domain(domain.name, document_id, created_by=created_by)
        await self._write(cluster.last_change())
        self.documents.changed(document_id)
        return entry

    async def add_administrator(
        self,
        name: str,
        password: str,
        *,
        superuser: bool = False,
        domains: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        cluster = self.documents.cluster
        for domain_name in domains or {}:
            if domain_name != "*":
                cluster.domain_by_ref(domain_name)
        auth.check_new_password(name, password, min_length=self.limits.min_password_length)
        password_hash = await asyncio.to_thread(auth.hash_password, password)
        entry = cluster.add_administrator(name, password_hash, superuser=superuser, domains=domains)
        await self._write(cluster.last_change())
        return entry

    async def _write(self, change: Change) -> None:
        document_id = self.documents.cluster.document_id
        await self.persister.persist(document_id, [change])
        self.documents.changed(document_id)
