"""A crdtmds server: storage, the cluster document, domains, sessions, and their gossip.

`Node` composes the pieces of DESIGN.md. Its core (this part) keeps every document in
memory, persists every change before anything else sees it, and tells gossip which
documents changed. The network side (WebSocket listener on /sync and /api, dialers with
backoff) moves bytes between sockets and the sans-I/O `Gossip` and `AdminAPI` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from automerge.core import Document

from crdtmds import auth
from crdtmds.cluster import ROLE_PRIMARY, ROLE_SECONDARY, ClusterDocument
from crdtmds.domain import Domain
from crdtmds.errors import ClusterError, NameInUse, ObjectNotFound, SessionError, StorageError
from crdtmds.protocol import new_document_id
from crdtmds.session import Session
from crdtmds.storage import DEFAULT_COMPACT_THRESHOLD, LoadProblem, SessionRecord, Storage

log = logging.getLogger("crdtmds.node")

DATABASE_FILE = "crdtmds.sqlite3"
CONFIG_KEY = "node-config"


@dataclass(slots=True)
class NodeConfig:
    """What a server remembers about itself (kept in the storage's meta table)."""

    name: str
    cluster_id: str
    cluster_document_id: str
    secret: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    url: str = ""
    region: str = "default"
    role: str = ROLE_PRIMARY
    tls_cert: str | None = None
    tls_key: str | None = None
    compact_threshold: int = DEFAULT_COMPACT_THRESHOLD
    max_message_size: int = 16 * 1024 * 1024
    peers: list[str] = field(default_factory=list)
    """Extra URLs to dial besides the servers in the cluster document."""

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> NodeConfig:
        known = {k: v for k, v in meta.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Node:
    """One server. Create with `Node.open(data_dir)` after `initialise`/`prepare_join`."""

    def __init__(self, config: NodeConfig, storage: Storage, data_dir: Path) -> None:
        self.config = config
        self.storage = storage
        self.data_dir = data_dir
        self.cluster: ClusterDocument = ClusterDocument(config.cluster_document_id, Document())
        self.domains: dict[str, Domain] = {}
        """Every domain document by document id (including empty copies awaiting sync)."""
        self.sessions: dict[str, Session] = {}
        self.load_problems: list[LoadProblem] = []
        self._uncompacted: dict[str, list[bytes] | None] = {}
        self._change_listeners: list[Callable[[str], None]] = []

    # ------------------------------------------------------------ creation and loading

    @classmethod
    async def initialise(
        cls,
        data_dir: str | Path,
        *,
        name: str,
        listen_host: str,
        listen_port: int,
        url: str,
        region: str,
        admin: str,
        password: str,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> NodeConfig:
        """Create a cluster: its document, secret, this Primary server and a superuser."""
        path = Path(data_dir)
        storage = await _open_fresh(path)
        try:
            cluster_id = new_document_id()
            config = NodeConfig(
                name=name,
                cluster_id=cluster_id,
                cluster_document_id=new_document_id(),
                secret=auth.new_secret(cluster_id),
                listen_host=listen_host,
                listen_port=listen_port,
                url=url,
                region=region,
                role=ROLE_PRIMARY,
                tls_cert=tls_cert,
                tls_key=tls_key,
            )
            cluster = ClusterDocument.create(config.cluster_id, config.cluster_document_id)
            cluster.add_server(name, url, region, ROLE_PRIMARY)
            cluster.add_administrator(admin, auth.hash_password(password), superuser=True)
            changes = [(c.hash, c.bytes) for c in cluster.doc.get_changes([])]
            await storage.append_changes(config.cluster_document_id, changes)
            await storage.set_meta(CONFIG_KEY, config.to_meta())
        finally:
            await storage.close()
        return config

    @classmethod
    async def prepare_join(
        cls,
        data_dir: str | Path,
        *,
        name: str,
        listen_host: str,
        listen_port: int,
        url: str,
        region: str,
        peer: str,
        secret: str,
        cluster_id: str,
        cluster_document_id: str,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> NodeConfig:
        """Record a Secondary's configuration; the cluster document arrives by gossip."""
        path = Path(data_dir)
        storage = await _open_fresh(path)
        try:
            config = NodeConfig(
                name=name,
                cluster_id=cluster_id,
                cluster_document_id=cluster_document_id,
                secret=secret,
                listen_host=listen_host,
                listen_port=listen_port,
                url=url,
                region=region,
                role=ROLE_SECONDARY,
                tls_cert=tls_cert,
                tls_key=tls_key,
                peers=[peer],
            )
            await storage.set_meta(CONFIG_KEY, config.to_meta())
        finally:
            await storage.close()
        return config

    @classmethod
    async def open(cls, data_dir: str | Path) -> Node:
        """Load a server from its data directory: every stored document and session."""
        path = Path(data_dir)
        if not (path / DATABASE_FILE).exists():
            raise ClusterError(f"{path} holds no crdtmds server (run init or join first)")
        storage = await Storage.open(path / DATABASE_FILE)
        try:
            meta = await storage.get_meta(CONFIG_KEY)
            if not isinstance(meta, dict):
                raise StorageError(f"{path} has no server configuration")
            node = cls(NodeConfig.from_meta(meta), storage, path)
            await node._load_documents()
            await node._load_sessions()
        except BaseException:
            await storage.close()
            raise
        return node

    async def _load_documents(self) -> None:
        loaded = await self.storage.load_all()
        self.load_problems = loaded.problems
        for problem in loaded.problems:
            log.error(
                "stored document %s is corrupt (%s row %s): %s",
                problem.document_id, problem.table, problem.row_id, problem.message,
            )  # fmt: skip
        for doc_id, doc in loaded.documents.items():
            self._uncompacted[doc_id] = None
            if doc_id == self.config.cluster_document_id:
                self.cluster = ClusterDocument(doc_id, doc)
            else:
                self.domains[doc_id] = Domain(doc_id, doc)
        self._attach_known_domains()

    async def _load_sessions(self) -> None:
        for record in await self.storage.load_sessions():
            domain = self.domains.get(record.document_id)
            if domain is None:
                log.warning("session %s belongs to an unknown domain; kept on disk", record.uid)
                continue
            self.sessions[record.uid] = Session.restore(
                domain,
                uid=record.uid,
                admin=record.admin,
                server=self.config.name,
                base_heads=record.base_heads,
                actor=record.actor,
                changes=record.changes,
                name=record.name,
                description=record.description,
                created_at=record.created_at,
            )

    async def close(self) -> None:
        await self.storage.close()

    # ------------------------------------------------------------ documents

    @property
    def name(self) -> str:
        return self.config.name

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

    def adopt_empty_document(self, document_id: str) -> Document:
        """An empty local copy of a document a trusted peer is about to send."""
        if document_id == self.cluster.document_id:
            return self.cluster.doc
        domain = self.domains.get(document_id)
        if domain is None:
            domain = self.domains[document_id] = Domain(document_id, Document())
            self._uncompacted[document_id] = []
        return domain.doc

    def _attach_known_domains(self) -> list[str]:
        """Empty copies of domains the cluster document lists but this server lacks."""
        missing = [
            entry["document-id"]
            for entry in self.cluster.domains().values()
            if entry.get("document-id") and entry["document-id"] not in self.domains
        ]
        for doc_id in missing:
            self.adopt_empty_document(doc_id)
        return missing

    def on_document_changed(self, listener: Callable[[str], None]) -> None:
        """Call `listener(document_id)` after every persisted change to a live document."""
        self._change_listeners.append(listener)

    def _changed(self, document_id: str) -> None:
        if document_id == self.cluster.document_id:
            self._attach_known_domains()
        for listener in self._change_listeners:
            listener(document_id)

    async def persist_received(self, document_id: str, before_heads: list[bytes]) -> int:
        """Persist the changes a peer applied to a live document since `before_heads`."""
        doc = self.document(document_id)
        if doc is None:
            return 0
        changes = [(c.hash, c.bytes) for c in doc.get_changes(before_heads)]
        await self._persist(document_id, changes)
        if document_id == self.cluster.document_id:
            self._attach_known_domains()
        return len(changes)

    async def _persist(self, document_id: str, changes: list[tuple[bytes, bytes]]) -> None:
        if not changes:
            return
        count = await self.storage.append_changes(document_id, changes)
        tracked = self._uncompacted.setdefault(document_id, [])
        if tracked is not None:
            tracked.extend(h for h, _ in changes)
        if count >= self.config.compact_threshold:
            await self.compact(document_id)

    async def compact(self, document_id: str) -> None:
        """Write a snapshot of the document and drop the change rows it covers."""
        doc = self.document(document_id)
        if doc is None:
            return
        snapshot = doc.save()
        tracked = self._uncompacted.get(document_id)
        covered = tracked if tracked is not None else [c.hash for c in doc.get_changes([])]
        self._uncompacted[document_id] = []
        await self.storage.save_snapshot(document_id, snapshot, list(covered))

    # ------------------------------------------------------------ cluster writes

    async def _write_cluster(self, change: tuple[bytes, bytes]) -> None:
        await self._persist(self.cluster.document_id, [change])
        self._changed(self.cluster.document_id)

    async def register_self(self) -> None:
        """Make sure this server is listed in the cluster document with its current URL."""
        if not self.cluster.is_ready():
            return
        entry = self.cluster.servers().get(self.name)
        wanted = (self.config.url, self.config.region, self.config.role)
        if entry is None or (entry.get("url"), entry.get("region"), entry.get("role")) != wanted:
            await self._write_cluster(
                self.cluster.add_server(
                    self.name, self.config.url, self.config.region, self.config.role
                )
            )

    async def create_domain(self, name: str, *, created_by: str) -> dict[str, Any]:
        """A new domain: its document (persisted first) and its cluster entry."""
        document_id = new_document_id()
        domain = Domain.create(name, document_id)
        if domain.name in self.cluster.domains():
            raise NameInUse(f"domain '{domain.name}' already exists", details={"name": name})
        changes = [(c.hash, c.bytes) for c in domain.doc.get_changes([])]
        await self._persist(document_id, changes)
        self.domains[document_id] = domain
        entry = self.cluster.add_domain(domain.name, document_id, created_by=created_by)
        await self._write_cluster(self.cluster.last_change())
        self._changed(document_id)
        return entry

    async def add_administrator(
        self,
        name: str,
        password: str,
        *,
        superuser: bool = False,
        domains: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        for domain_name in domains or {}:
            if domain_name != "*":
                self.cluster.domain_by_ref(domain_name)
        entry = self.cluster.add_administrator(
            name, auth.hash_password(password), superuser=superuser, domains=domains
        )
        await self._write_cluster(self.cluster.last_change())
        return entry

    # ------------------------------------------------------------ sessions

    async def open_session(
        self, domain_ref: Any, *, admin: str, name: str = "", description: str = ""
    ) -> Session:
        domain = self.domain(domain_ref)
        session = Session.open(
            domain, admin=admin, server=self.name, name=name, description=description
        )
        await self.storage.save_session(self._session_record(session))
        self.sessions[session.uid] = session
        return session

    def session(self, uid: Any) -> Session:
        session = self.sessions.get(uid) if isinstance(uid, str) else None
        if session is None:
            raise SessionError(f"no session '{uid}' on this server")
        return session

    def sessions_of(self, admin: str, document_id: str | None = None) -> list[Session]:
        return [
            s
            for s in self.sessions.values()
            if s.admin == admin and (document_id is None or s.domain.document_id == document_id)
        ]

    async def save_session_edits(self, session: Session) -> None:
        """Persist the draft's new changes, so an unpublished session survives a restart."""
        unsaved = session.take_unsaved_changes()
        if unsaved:
            await self.storage.append_session_changes(session.uid, unsaved)
        await self.storage.touch_session(session.uid, session.last_active)

    async def publish(self, session: Session, comments: str = "") -> dict[str, Any]:
        """Durable on this server before it returns, then gossiped."""
        await self.save_session_edits(session)
        pending = session.prepare_publish(comments)
        document_id = session.domain.document_id
        try:
            await self._persist(document_id, pending.changes)
        except BaseException:
            session.abort_publish()
            session.take_unsaved_changes()
            raise
        revision = session.complete_publish()
        await self.storage.replace_session_changes(session.uid, session.base_heads, [])
        self._changed(document_id)
        return revision

    async def discard(self, session: Session) -> int:
        count = session.discard()
        await self.storage.replace_session_changes(session.uid, session.base_heads, [])
        return count

    async def close_session(self, session: Session) -> None:
        """Forget a session (logout of a session with nothing unpublished)."""
        self.sessions.pop(session.uid, None)
        await self.storage.delete_session(session.uid)

    def _session_record(self, session: Session) -> SessionRecord:
        return SessionRecord(
            uid=session.uid,
            document_id=session.domain.document_id,
            domain=session.domain.name,
            admin=session.admin,
            name=session.name,
            description=session.description,
            base_heads=session.base_heads,
            actor=session.actor,
            created_at=session.created_at,
            last_active=session.last_active,
        )

    # ------------------------------------------------------------ status

    def domain_heads(self) -> dict[str, dict[str, Any]]:
        """Per domain name: document id and sorted hex heads on this server."""
        result: dict[str, dict[str, Any]] = {}
        for name, entry in sorted(self.cluster.domains().items()):
            doc = self.document(entry.get("document-id", ""))
            heads = sorted(h.hex() for h in doc.get_heads()) if doc is not None else []
            result[name] = {"document-id": entry.get("document-id"), "heads": heads}
        return result


async def _open_fresh(path: Path) -> Storage:
    if (path / DATABASE_FILE).exists():
        raise ClusterError(f"{path} already holds a crdtmds server")
    return await Storage.open(path / DATABASE_FILE)
