"""The cluster document: servers, domains and administrators, shared by every server.

It is an Automerge document like a domain, gossiped the same way, so a Secondary learns
the whole cluster by syncing one document, and an administrator added on any server can
log in on every server.

    { "cluster-id": "...",
      "servers": { <name>: { "name", "server-id", "url", "region", "role", "joined-at" } },
      "removed-servers": { <server id>: { "name", "server-id", "removed-at",
                                          "removed-by" } },
      "domains": { <name>: { "name", "uid", "document-id", "created-at", "created-by" } },
      "deleted-domains": { <document id>: { "name", "uid", "document-id",
                                            "deleted-at", "deleted-by" } },
      "administrators": { <name>: { "name", "password-hash", "superuser", "locked",
                                     "domains": { <domain name or "*">: "read-only" |
                                                  "read-write" } } } }

A deleted domain leaves a tombstone in "deleted-domains", keyed by its document id: the
id is never served, stored or accepted again by any server, so a server that was down
during the delete cannot bring the domain back, and a rename racing the delete (which
lists the entry under a new name) loses to it. Administrators are written field by field
("locked", "password-hash", ...), so that a delete racing an edit on another server
wins (Automerge drops edits inside a deleted map entry) and two edits of different
fields both survive. A "locked" administrator keeps its entry but has no access at all.

A removed server (`delete-server`, or the old identity of a server that rejoined with
`join --replace`) leaves a tombstone in "removed-servers", keyed by the random
"server-id" its data directory was given by init or join: no server dials it or admits
it again, while a new server may join under the same name with a new id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from automerge.core import ROOT, Document, ObjType

from crdtmds.core import model, names
from crdtmds.core.docdata import child_id, put_value, read
from crdtmds.errors import ClusterError, InvalidParameter, NameInUse, ObjectNotFound

ROLE_PRIMARY = "primary"
ROLE_SECONDARY = "secondary"
READ_ONLY = "read-only"
READ_WRITE = "read-write"
SUPERUSER = "superuser"
PERMISSION_LEVELS = (READ_ONLY, READ_WRITE, SUPERUSER)
ALL_DOMAINS = "*"
DELETED_DOMAINS = "deleted-domains"
REMOVED_SERVERS = "removed-servers"
CLUSTER_SECTIONS = ("servers", "domains", DELETED_DOMAINS, "administrators", REMOVED_SERVERS)

Change = tuple[bytes, bytes]


class ClusterDocument:
    """Reads and writes of the cluster document; each write is one persisted change."""

    def __init__(self, document_id: str, doc: Document) -> None:
        self.document_id = document_id
        self.doc = doc
        self._cache: dict[str, Any] | None = None
        self._cache_heads: list[bytes] = []
        self._domains_cache: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None = None

    @classmethod
    def create(cls, cluster_id: str, document_id: str) -> ClusterDocument:
        doc = Document()
        with doc.transaction() as tx:
            put_value(tx, ROOT, "cluster-id", cluster_id)
            for section in CLUSTER_SECTIONS:
                put_value(tx, ROOT, section, {})
        return cls(document_id, doc)

    # ------------------------------------------------------------ reads

    def plain(self) -> dict[str, Any]:
        """The whole document as plain data (small; cached by heads)."""
        heads = self.doc.get_heads()
        if self._cache is None or heads != self._cache_heads:
            self._cache = read(self.doc)
            self._cache_heads = heads
        return self._cache

    def adopt_plain(self, heads: list[bytes], plain: dict[str, Any]) -> bool:
        """Take `plain` as the document read at `heads` (kept from the last stop: reading
        a cluster of many domains costs a start more than anything else), if the
        document is still at those heads."""
        current = self.doc.get_heads()
        if sorted(current) != sorted(heads):
            return False
        self._cache, self._cache_heads = plain, current
        return True

    def is_ready(self) -> bool:
        """False for an empty copy still waiting for its first sync."""
        return child_id(self.doc, ROOT, "servers") is not None

    @property
    def cluster_id(self) -> str:
        return str(self.plain().get("cluster-id", ""))

    def servers(self) -> dict[str, dict[str, Any]]:
        return dict(self.plain().get("servers") or {})

    def removed_servers(self) -> dict[str, dict[str, Any]]:
        """Tombstones of removed servers, by server id."""
        return dict(self.plain().get(REMOVED_SERVERS) or {})

    def is_removed(self, server_id: Any) -> bool:
        return isinstance(server_id, str) and server_id in self.removed_servers()

    def domains(self) -> dict[str, dict[str, Any]]:
        """The live domains by name: tombstoned document ids are left out, and of two
        names holding one document (renames racing on two servers) the first is kept."""
        plain = self.plain()
        if self._domains_cache is not None and self._domains_cache[0] is plain:
            return dict(self._domains_cache[1])
        deleted = plain.get(DELETED_DOMAINS) or {}
        live: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        for name, entry in sorted((plain.get("domains") or {}).items()):
            doc_id = entry.get("document-id")
            if doc_id in deleted or doc_id in seen:
                continue
            seen.add(doc_id)
            live[name] = entry
        self._domains_cache = (plain, live)
        return dict(live)

    def deleted_domains(self) -> dict[str, dict[str, Any]]:
        """Tombstones of deleted domains, by document id."""
        return dict(self.plain().get(DELETED_DOMAINS) or {})

    def is_deleted(self, document_id: str) -> bool:
        return document_id in self.deleted_domains()

    def administrators(self) -> dict[str, dict[str, Any]]:
        return dict(self.plain().get("administrators") or {})

    def domain_by_ref(self, ref: Any) -> dict[str, Any]:
        """A domain entry by name, uid or document id."""
        if not isinstance(ref, str) or not ref:
            raise InvalidParameter("'domain' must be a domain name or uid")
        domains = self.domains()
        if ref in domains:
            return domains[ref]
        for entry in domains.values():
            if ref in (entry.get("uid"), entry.get("document-id")):
                return entry
        raise ObjectNotFound(f"domain '{ref}' not found", details={"reference": ref})

    def permission(self, admin: str, domain: str | None) -> str | None:
        """The administrator's level on `domain` (None: system-wide), or None for no access."""
        record = self.administrators().get(admin)
        if record is None or record.get("locked"):
            return None
        if record.get("superuser"):
            return SUPERUSER
        if domain is None:
            return READ_ONLY
        grants = record.get("domains") or {}
        level = grants.get(domain, grants.get(ALL_DOMAINS))
        return level if level in PERMISSION_LEVELS else None

    # ------------------------------------------------------------ writes

    def add_server(
        self, name: str, url: str, region: str, role: str, server_id: str = ""
    ) -> Change:
        """List a server, or update its entry. Only new values are checked, so that a
        server listed before the checks (or by an older peer) still starts."""
        current = self.servers().get(name)
        if current is None:
            names.check_name(name, "name")
        if current is None or current.get("region") != region:
            names.check_label(region, "region")
        entry = {
            "name": name,
            "server-id": server_id,
            "url": url,
            "region": region,
            "role": role,
            "joined-at": time.time(),
        }
        return self._write("servers", name, entry)

    def remove_server(self, name: str, *, removed_by: str) -> dict[str, Any]:
        """Unlist a server and leave the tombstone of its id, in one change."""
        entry = self.servers().get(name)
        if entry is None:
            raise ObjectNotFound(f"server '{name}' not found", details={"name": name})
        server_id = str(entry.get("server-id") or f"unnamed:{name}")
        tombstone = {
            "name": name,
            "server-id": server_id,
            "removed-at": time.time(),
            "removed-by": removed_by,
        }
        tombstones = child_id(self.doc, ROOT, REMOVED_SERVERS)
        with self.doc.transaction() as tx:
            _put_tombstone(tx, tombstones, REMOVED_SERVERS, server_id, tombstone)
            tx.delete(self._section_id("servers"), name)
        return tombstone

    def add_domain(self, name: str, document_id: str, *, created_by: str) -> dict[str, Any]:
        name = names.check_name(name, "name")
        if name in self.domains():
            raise NameInUse(f"domain '{name}' already exists", details={"name": name})
        entry = {
            "name": name,
            "uid": model.new_uid(),
            "document-id": document_id,
            "created-at": time.time(),
            "created-by": created_by,
        }
        self._write("domains", name, entry)
        return entry

    def add_administrator(
        self,
        name: str,
        password_hash: str,
        *,
        superuser: bool = False,
        domains: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        name = names.check_name(name, "name")
        if name in self.administrators():
            raise NameInUse(f"administrator '{name}' already exists", details={"name": name})
        entry = {
            "name": name,
            "password-hash": password_hash,
            "superuser": bool(superuser),
            "domains": check_grants(domains or {}),
        }
        self._write("administrators", name, entry)
        return entry

    def set_administrator(self, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Change some fields of an administrator, each one its own write."""
        if name not in self.administrators():
            raise ObjectNotFound(f"administrator '{name}' not found", details={"name": name})
        entry_id = child_id(self.doc, self._section_id("administrators"), name)
        if entry_id is None:
            raise ClusterError(f"administrator '{name}' has no entry to change")
        with self.doc.transaction() as tx:
            for key, value in fields.items():
                put_value(tx, entry_id, key, value)
        return self.administrators()[name]

    def delete_administrator(self, name: str) -> Change:
        if name not in self.administrators():
            raise ObjectNotFound(f"administrator '{name}' not found", details={"name": name})
        with self.doc.transaction() as tx:
            tx.delete(self._section_id("administrators"), name)
        return self.last_change()

    def delete_domain(self, name: str, *, deleted_by: str) -> dict[str, Any]:
        """Unlist a domain and leave its tombstone, in one change."""
        entry = self.domains()[name]
        tombstone = {
            "name": name,
            "uid": entry.get("uid", ""),
            "document-id": entry["document-id"],
            "deleted-at": time.time(),
            "deleted-by": deleted_by,
        }
        tombstones = child_id(self.doc, ROOT, DELETED_DOMAINS)
        with self.doc.transaction() as tx:
            _put_tombstone(tx, tombstones, DELETED_DOMAINS, entry["document-id"], tombstone)
            tx.delete(self._section_id("domains"), name)
            self._move_grants(tx, name, None)
        return tombstone

    def rename_domain(self, name: str, new_name: str) -> dict[str, Any]:
        """List a domain under a new name, in one change."""
        new_name = names.check_name(new_name, "new-name")
        if new_name in self.domains():
            raise NameInUse(f"domain '{new_name}' already exists", details={"name": new_name})
        entry = {**self.domains()[name], "name": new_name}
        section = self._section_id("domains")
        with self.doc.transaction() as tx:
            tx.delete(section, name)
            put_value(tx, section, new_name, entry)
            self._move_grants(tx, name, new_name)
        return entry

    def _move_grants(self, tx: Any, name: str, new_name: str | None) -> None:
        """Administrators' permissions on domain `name` follow it to `new_name` (or go,
        for None): permissions name domains."""
        admins_id = self._section_id("administrators")
        for admin, record in self.administrators().items():
            grants = record.get("domains") or {}
            grants_id = child_id(self.doc, child_id(self.doc, admins_id, admin), "domains")
            if name not in grants or grants_id is None:
                continue
            tx.delete(grants_id, name)
            if new_name is not None and new_name not in grants:
                put_value(tx, grants_id, new_name, grants[name])

    def last_change(self) -> Change:
        change = self.doc.get_last_local_change()
        if change is None:
            raise ClusterError("the cluster document has no local change")
        return change.hash, change.bytes

    def _section_id(self, section: str) -> bytes:
        section_id = child_id(self.doc, ROOT, section)
        if section_id is None:
            raise ClusterError("the cluster document is not initialised yet")
        return section_id

    def _write(self, section: str, key: str, entry: Mapping[str, Any]) -> Change:
        section_id = self._section_id(section)
        with self.doc.transaction() as tx:
            put_value(tx, section_id, key, entry)
        return self.last_change()


def check_grants(grants: Mapping[str, str]) -> dict[str, str]:
    """Per-domain permissions of an administrator: read-only or read-write each."""
    for domain, level in grants.items():
        if level not in (READ_ONLY, READ_WRITE):
            raise InvalidParameter(
                f"permission on '{domain}' must be {READ_ONLY} or {READ_WRITE}, not {level!r}"
            )
    return dict(grants)


def _put_tombstone(
    tx: Any, tombstones: bytes | None, section: str, key: str, record: dict[str, Any]
) -> None:
    """`record` under `key` of the root map `section`, made first in a cluster created
    before that kind of tombstone existed."""
    if tombstones is None:
        tombstones = tx.put_object(ROOT, section, ObjType.Map)
    put_value(tx, tombstones, key, record)


def public_administrator(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An administrator record without its password hash, for replies and logs."""
    return {k: v for k, v in entry.items() if k != "password-hash"}
