"""Writes to the cluster document: this server's own entry, the lifecycle of domains
(add, rename, delete) and of administrators (add, change, lock, delete). Each write is
persisted before the listeners hear of it.

Rules kept here: the last superuser who is not locked cannot be deleted, locked or made
an ordinary administrator (checked against this server's copy: two servers each
removing a different superuser at the same moment can still leave none)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from automerge.core import ROOT

from crdtmds.app.documents import Documents
from crdtmds.app.persistence import Change, Persister
from crdtmds.config import Limits, ServerConfig
from crdtmds.core import auth
from crdtmds.core.cluster import ALL_DOMAINS, check_grants
from crdtmds.core.docdata import change_rows, put_value
from crdtmds.core.domain import Domain
from crdtmds.errors import MissingParameter, NameInUse, ObjectNotFound, ValidationError
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
        wanted = (config.url, config.region, config.role, config.server_id)
        listed = ("url", "region", "role", "server-id")
        if entry is None or tuple(entry.get(key) for key in listed) != wanted:
            await self._write(
                cluster.add_server(
                    config.name, config.url, config.region, config.role, config.server_id
                )
            )

    async def remove_server(self, name: str, *, removed_by: str) -> dict[str, Any]:
        """Unlist a server and tombstone its id: the others stop dialing it and refuse it.
        This server cannot remove itself (ask another one: the removal must come from a
        server that stays)."""
        if name == self.config.name:
            raise ValidationError(
                f"'{name}' is the server you are connected to: remove it through another "
                "server of the cluster",
                details={"name": name},
            )
        tombstone = self.documents.cluster.remove_server(name, removed_by=removed_by)
        await self._write(self.documents.cluster.last_change())
        return tombstone

    async def replace_listed_self(self) -> dict[str, Any] | None:
        """`join --replace`: the entry under this server's name belongs to a lost
        identity; tombstone that one (its data directory, if it comes back, is refused)."""
        cluster, config = self.documents.cluster, self.config
        entry = cluster.servers().get(config.name)
        if entry is None or entry.get("server-id") == config.server_id:
            return None
        tombstone = cluster.remove_server(config.name, removed_by=f"join --replace ({config.name})")
        await self._write(cluster.last_change())
        return tombstone

    async def create_domain(self, name: str, *, created_by: str) -> dict[str, Any]:
        """A new domain: its document (persisted first) and its cluster entry."""
        cluster = self.documents.cluster
        document_id = new_document_id()
        domain = Domain.create(name, document_id)
        if domain.name in cluster.domains():
            raise NameInUse(f"domain '{domain.name}' already exists", details={"name": name})
        await self.persister.persist(document_id, change_rows(domain.doc))
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
        self._check_domains(domains or {})
        auth.check_new_password(name, password, min_length=self.limits.min_password_length)
        password_hash = await asyncio.to_thread(auth.hash_password, password)
        entry = cluster.add_administrator(name, password_hash, superuser=superuser, domains=domains)
        await self._write(cluster.last_change())
        return entry

    async def set_administrator(
        self,
        name: str,
        *,
        password: str | None = None,
        locked: bool | None = None,
        superuser: bool | None = None,
        domains: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Change an administrator's password, lock, superuser flag or domains (only
        those given), in one change."""
        cluster = self.documents.cluster
        if name not in cluster.administrators():
            raise ObjectNotFound(f"administrator '{name}' not found", details={"name": name})
        fields: dict[str, Any] = {}
        if domains is not None:
            self._check_domains(domains)
            fields["domains"] = check_grants(domains)
        if superuser is not None:
            fields["superuser"] = superuser
        if locked is not None:
            fields["locked"] = locked
        if (superuser is False or locked is True) and self.is_last_superuser(name):
            raise ValidationError(
                f"'{name}' is the last superuser who is not locked: make another one first",
                details={"name": name},
            )
        if password is not None:
            auth.check_new_password(name, password, min_length=self.limits.min_password_length)
            fields["password-hash"] = await asyncio.to_thread(auth.hash_password, password)
        if not fields:
            raise MissingParameter("nothing to change: give what to set")
        entry = cluster.set_administrator(name, fields)
        await self._write(cluster.last_change())
        return entry

    async def delete_administrator(self, name: str) -> None:
        """Remove an administrator; every server then ends their logins."""
        cluster = self.documents.cluster
        if name not in cluster.administrators():
            raise ObjectNotFound(f"administrator '{name}' not found", details={"name": name})
        if self.is_last_superuser(name):
            raise ValidationError(
                f"'{name}' is the last superuser who is not locked: make another one first",
                details={"name": name},
            )
        await self._write(cluster.delete_administrator(name))

    def is_last_superuser(self, name: str) -> bool:
        """Whether `name` is the only superuser who is not locked."""
        active = [
            admin
            for admin, entry in self.documents.cluster.administrators().items()
            if entry.get("superuser") and not entry.get("locked")
        ]
        return active == [name]

    async def delete_domain(self, ref: Any, *, deleted_by: str) -> dict[str, Any]:
        """Unlist a domain and leave its tombstone; every server then drops the document,
        its stored rows and its sessions (`Documents.on_domains_deleted`)."""
        cluster = self.documents.cluster
        entry = cluster.domain_by_ref(ref)
        tombstone = cluster.delete_domain(entry["name"], deleted_by=deleted_by)
        await self._write(cluster.last_change())
        return tombstone

    async def rename_domain(self, ref: Any, new_name: str) -> dict[str, Any]:
        """List a domain under a new name, and write the name into its document."""
        cluster = self.documents.cluster
        entry = cluster.domain_by_ref(ref)
        renamed = cluster.rename_domain(entry["name"], new_name)
        await self._write(cluster.last_change())
        domain = self.documents.domains.get(entry["document-id"])
        if domain is not None and domain.is_domain_document():
            domain = self.documents.current_epoch(domain)  # the name its newest epoch shows
            with domain.lock:  # a revert's worker thread may be using the document
                with domain.doc.transaction() as tx:
                    put_value(tx, ROOT, "name", renamed["name"])
                change = domain.doc.get_last_local_change()
            if change is not None:
                await self.persister.persist(domain.document_id, [(change.hash, change.bytes)])
                self.documents.changed(domain.document_id)
        return renamed

    def _check_domains(self, grants: Mapping[str, str]) -> None:
        for domain_name in grants:
            if domain_name != ALL_DOMAINS:
                self.documents.cluster.domain_by_ref(domain_name)

    async def _write(self, change: Change) -> None:
        document_id = self.documents.cluster.document_id
        await self.persister.persist(document_id, [change])
        self.documents.changed(document_id)
