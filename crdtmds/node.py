"""A crdtmds server: storage, the cluster document, domains, sessions, and their gossip.

`Node` composes the pieces of the design. Its core keeps every document in memory, persists
every change before anything else sees it, and tells gossip which documents changed. Its
network side moves bytes between sockets and the sans-I/O objects:

- one WebSocket listener: ``/sync`` speaks the automerge-repo protocol through the `Gossip`
  hub (other servers, and administrators' automerge-repo clients), ``/api`` carries the
  admin API (JSON text frames), anything else is answered HTTP 404;
- one dialer per remote server (every server of the cluster document, plus configured
  peers), reconnecting with capped exponential backoff and jitter; when two servers dial
  each other, the one with the larger name drops its own outgoing link;
- per connection, a reader task feeding frames to the hub (received changes are persisted
  before the hub may forward them) and a sender task draining what the hub has to send,
  woken whenever a document changes.

Servers authenticate each other with an HMAC of the cluster secret over a fresh nonce
(`auth.ServerCredentials`), carried in the join's peer metadata under ``crdtmds``; the
listener answers with its own proof over the dialer's nonce. A join without that metadata
is an administrator's automerge-repo client, authenticated by the credentials in the URL
query; it may read the domains its administrator may read and write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import secrets
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from automerge.core import Document
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidURI,
)
from websockets.frames import CloseCode
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.server import ServerProtocol

from crdtmds import auth
from crdtmds.api import AdminAPI
from crdtmds.changes import applied_chunks
from crdtmds.cluster import ROLE_PRIMARY, ROLE_SECONDARY, ClusterDocument
from crdtmds.domain import Domain
from crdtmds.errors import (
    AuthenticationFailed,
    ClusterError,
    CrdtmdsError,
    NameInUse,
    ObjectNotFound,
    ProtocolError,
    SessionError,
    StorageCorruption,
    StorageError,
    is_core_error,
    size_text,
    too_large_message,
)
from crdtmds.gossip import (
    MAX_DOCUMENTS_PER_CONNECTION_DEFAULT,
    MAX_SYNC_MESSAGE_SIZE_DEFAULT,
    ConnectionFailed,
    DocumentChanged,
    DocumentUnavailableFromPeer,
    Event,
    Gossip,
    JoinReceived,
    PeerConnected,
    PeerInfo,
)
from crdtmds.gossip import sync_message_heads as read_sync_message_heads
from crdtmds.protocol import Error, Join, Peer, Request, Sync, decode, encode, new_document_id
from crdtmds.session import Session
from crdtmds.storage import DEFAULT_COMPACT_THRESHOLD, LoadProblem, SessionRecord, Storage

log = logging.getLogger("crdtmds.node")

DATABASE_FILE = "crdtmds.sqlite3"
CONFIG_KEY = "node-config"

SYNC_PATH = "/sync"
API_PATH = "/api"
METADATA_KEY = "crdtmds"
"""The key of crdtmds' own facts inside automerge-repo peer metadata."""
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
JOIN_TIMEOUT = 60.0
RECEIVE_QUEUE_FRAMES = 256
"""Frames read ahead per /sync connection while the previous batch is being persisted."""
DUPLICATE_LINK_PAUSE = 0.5
DUPLICATE_LINK_GRACE = 2.0
"""Longest a replaced link to a server keeps running beside the new one, in seconds."""
DUPLICATE_LINK_POLL = 0.02
MAX_CLOSE_REASON = 120


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


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may cost a server (set by `crdtmds start` options)."""

    max_message_size: int = 16 * 1024 * 1024
    """Bytes in one WebSocket frame, on /sync and /api; larger frames close the socket."""
    max_documents_per_connection: int = MAX_DOCUMENTS_PER_CONNECTION_DEFAULT
    """Distinct documents one /sync connection may name."""
    max_sync_message_size: int = MAX_SYNC_MESSAGE_SIZE_DEFAULT
    """Bytes in one sync frame this server sends: larger sync messages go as several, so
    that stock automerge-repo clients (which accept 1 MiB) can fetch large domains. Only a
    single change larger than this is sent whole."""
    login_failures: int = 5
    """Failed logins for one user name from one address before it must wait; four times as
    many for one user name over all addresses, and for one address over all user names
    (see `auth.LoginThrottle`)."""
    login_lockout: float = 1.0
    """Seconds of the first wait; each further failure doubles it (up to five minutes)."""
    min_password_length: int = auth.MIN_PASSWORD_LENGTH
    """Fewest characters of a password set on this server (add-administrator)."""
    handshake_timeout: float = 10.0
    """Seconds a /sync peer has, once connected, to be admitted (its join accepted)."""
    idle_timeout: float = 900.0
    """Seconds an /api connection may stay silent before it is closed."""
    relay_delay: float = 0.5
    """Seconds a server of a full mesh, linked to every other server, waits before passing
    on changes it got from one of them: the others almost always got them from their
    origin, and relaying at once would send each change to each server once per server.
    Without the mesh (`--no-mesh`) a server relays at once."""


class Node:
    """One server. Create with `Node.open(data_dir)` after `initialise` or `join_cluster`;
    then `serve_forever()` (or `start()` ... `stop()`)."""

    def __init__(
        self, config: NodeConfig, storage: Storage, data_dir: Path, limits: Limits | None = None
    ) -> None:
        self.config = config
        self.storage = storage
        self.data_dir = data_dir
        self.limits = limits or Limits(max_message_size=config.max_message_size)
        self.cluster: ClusterDocument = ClusterDocument(config.cluster_document_id, Document())
        self.domains: dict[str, Domain] = {}
        """Every domain document by document id (including empty copies awaiting sync)."""
        self.sessions: dict[str, Session] = {}
        self.load_problems: list[LoadProblem] = []
        self._uncompacted: dict[str, list[bytes] | None] = {}
        self._compacted: dict[str, int] = {}
        """Change rows folded into snapshots per document since this server started."""
        self._change_listeners: list[Callable[[str], None]] = []
        self.gossip = Gossip(
            f"crdtmds-{config.name}-{secrets.token_hex(4)}",
            self,
            max_message_size=self.limits.max_message_size,
            max_documents_per_connection=self.limits.max_documents_per_connection,
            max_sync_message_size=self.limits.max_sync_message_size,
            on_peer=self._verify_listener,
        )
        self.on_document_changed(self._schedule_gossip)
        self._net = _Network()

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
        min_password_length: int = auth.MIN_PASSWORD_LENGTH,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> NodeConfig:
        """Create a cluster: its document, secret, this Primary server and a superuser."""
        auth.check_new_password(admin, password, min_length=min_password_length)
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
        await _create_data_dir(Path(data_dir), config, changes)
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
        await _create_data_dir(Path(data_dir), config, [])
        return config

    @classmethod
    async def open(cls, data_dir: str | Path, *, limits: Limits | None = None) -> Node:
        """Load a server from its data directory: every stored document and session.

        Without `limits`, the defaults apply (and the stored maximum message size)."""
        path = Path(data_dir)
        if not (path / DATABASE_FILE).exists():
            raise ClusterError(f"{path} holds no crdtmds server (run init or join first)")
        storage = await Storage.open(path / DATABASE_FILE)
        try:
            await storage.check_writable()
            meta = await storage.get_meta(CONFIG_KEY)
            if not isinstance(meta, dict):
                raise StorageError(f"{path} has no server configuration")
            node = cls(NodeConfig.from_meta(meta), storage, path, limits)
            await node._load_documents()
            await node._load_sessions()
        except BaseException:
            await storage.close()
            raise
        return node

    async def _load_documents(self) -> None:
        """Load every stored document; refuse a store that does not load whole, since
        serving what is left would show administrators (and peers) a wrong state."""
        loaded = await self.storage.load_all()
        self.load_problems = loaded.problems
        for problem in loaded.problems:
            log.error(
                "stored document %s is corrupt (%s row %s): %s",
                problem.document_id, problem.table, problem.row_id, problem.message,
            )  # fmt: skip
        if loaded.problems:
            raise _damaged_store_error(self.data_dir, loaded.problems)
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
            try:
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
            except BaseException as exc:
                if not is_core_error(exc):
                    raise
                raise StorageCorruption(
                    f"{self.data_dir}: the stored draft of session {record.uid} "
                    f"({record.admin}, domain {record.domain}) cannot be restored: {exc}",
                    details={"table": "session_changes", "session": record.uid},
                ) from exc

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

    def listed_domain_ids(self) -> set[str]:
        """Document ids of the domains the cluster document lists."""
        return {
            entry["document-id"]
            for entry in self.cluster.domains().values()
            if entry.get("document-id")
        }

    def _cluster_document_updated(self) -> None:
        """Ask peers for newly listed domains, and dial newly listed servers."""
        for doc_id in self._attach_known_domains():
            self._notify(doc_id)
        if self._net.running:
            self._refresh_dial_targets()

    def on_document_changed(self, listener: Callable[[str], None]) -> None:
        """Call `listener(document_id)` after every persisted change to a live document."""
        self._change_listeners.append(listener)

    def _changed(self, document_id: str) -> None:
        self._notify(document_id)
        if document_id == self.cluster.document_id:
            self._cluster_document_updated()

    def _notify(self, document_id: str) -> None:
        for listener in self._change_listeners:
            listener(document_id)

    async def persist_received(
        self, document_id: str, before_heads: list[bytes], chunks: Sequence[bytes] = ()
    ) -> int:
        """Persist the changes a peer applied to a live document since `before_heads`.

        `chunks` are the change chunks the peer's messages carried: stored as they came
        when they are exactly what was applied, which spares asking the document (its
        `get_changes` rebuilds each change from the operations)."""
        doc = self.document(document_id)
        if doc is None:
            return 0
        changes = applied_chunks(chunks, before_heads, doc.get_heads()) if chunks else None
        if changes is None:
            changes = [(c.hash, c.bytes) for c in doc.get_changes(before_heads)]
        await self._persist(document_id, changes)
        if document_id == self.cluster.document_id:
            self._cluster_document_updated()
        return len(changes)

    async def _persist(self, document_id: str, changes: list[tuple[bytes, bytes]]) -> int:
        """Append changes of the live document; returns the document's uncompacted row
        count, and compacts past the threshold. (A publish compacts only once its changes
        are in the live document: a snapshot taken before would lack them while their rows
        are dropped.)"""
        if not changes:
            return 0
        count = await self.storage.append_changes(document_id, changes)
        self._note_appended(document_id, changes)
        await self._compact_if_due(document_id, count)
        return count

    def _note_appended(self, document_id: str, changes: list[tuple[bytes, bytes]]) -> None:
        tracked = self._uncompacted.setdefault(document_id, [])
        if tracked is not None:
            tracked.extend(h for h, _ in changes)

    async def _compact_if_due(self, document_id: str, uncompacted: int) -> None:
        """Compact once the change rows reach the threshold and as many as the snapshots
        have taken in: saving a document stalls the server for a time that grows with the
        document, so the log grows with it and saving costs the same per change. A failure
        is logged, not raised: the changes are durable already, compaction only saves
        space, and it is tried again next time."""
        due = max(self.config.compact_threshold, self._compacted.get(document_id, 0))
        if uncompacted < due:
            return
        try:
            await self.compact(document_id)
        except StorageError as exc:
            log.warning("compaction of %s failed (will retry): %s", document_id, exc)

    async def compact(self, document_id: str) -> None:
        """Write a snapshot of the document and drop the change rows it covers."""
        doc = self.document(document_id)
        if doc is None:
            return
        snapshot = doc.save()
        tracked = self._uncompacted.get(document_id)
        covered = tracked if tracked is not None else [c.hash for c in doc.get_changes([])]
        self._uncompacted[document_id] = []
        try:
            await self.storage.save_snapshot(document_id, snapshot, list(covered))
            self._compacted[document_id] = self._compacted.get(document_id, 0) + len(covered)
        except BaseException:
            # still uncompacted: cover these rows next time, with those appended meanwhile
            self._uncompacted[document_id] = [*covered, *self._uncompacted[document_id]]
            raise

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
        auth.check_new_password(name, password, min_length=self.limits.min_password_length)
        password_hash = await asyncio.to_thread(auth.hash_password, password)
        entry = self.cluster.add_administrator(
            name, password_hash, superuser=superuser, domains=domains
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
        """Persist the draft's new changes, so an unpublished session survives a restart.

        One write: the new changes, the draft's base heads (an empty draft may have moved
        onto newer ones, see `start_from_live`) and its last activity. Changes that fail
        to persist (a full disk) are kept for the next call: later changes depend on them,
        and a stored draft must never lack a dependency.
        """
        unsaved = session.take_unsaved_changes()
        try:
            await self.storage.append_session_changes(
                session.uid,
                unsaved,
                base_heads=session.base_heads,
                last_active=session.last_active,
            )
        except StorageError:
            session.return_unsaved_changes(unsaved)
            raise

    def start_from_live(self, session: Session) -> None:
        """Move a draft without changes onto the live heads. Nothing is written: the stored
        draft is as empty, and the next `save_session_edits` records the new base."""
        if session.has_changes():
            raise SessionError("the session has unpublished changes")
        session.discard()

    async def publish(self, session: Session, comments: str = "") -> dict[str, Any]:
        """Durable on this server before it returns (one write), then gossiped."""
        pending = session.prepare_publish(comments)
        # The draft's unsaved changes are among the published ones; kept should it fail.
        unsaved = session.take_unsaved_changes()
        document_id = session.domain.document_id
        try:
            count = await self.storage.publish_changes(
                document_id,
                pending.changes,
                session_uid=session.uid,
                base_heads=session.fork.get_heads(),
                last_active=session.last_active,
            )
        except BaseException:
            session.abort_publish()
            session.return_unsaved_changes(unsaved)
            raise
        self._note_appended(document_id, pending.changes)
        self.gossip.local_changes(document_id, pending.changes)
        # Gossip learns of the publish as soon as the live document holds it, before the
        # session is rebased onto it.
        revision = session.complete_publish(on_merged=lambda: self._changed(document_id))
        await self._compact_if_due(document_id, count)
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

    def connected_peers(self) -> list[str]:
        """Names of the servers this one has a live, authenticated connection with."""
        return sorted(
            {
                link.peer_name
                for link in self._net.links.values()
                if link.peer_name is not None and self.gossip.peer(link.conn_id) is not None
            }
        )

    def local_status(self) -> dict[str, Any]:
        """This server's own view: identity, connections and the heads of every document."""
        servers = [
            {key: entry.get(key) for key in ("name", "url", "region", "role")}
            for _, entry in sorted(self.cluster.servers().items())
        ]
        links = [link for link in self._net.links.values() if not link.closing]
        server_links = sum(1 for link in links if link.peer_name is not None)
        clients = sum(1 for link in links if link.admin is not None)
        return {
            "name": self.name,
            "region": self.config.region,
            "role": self.config.role,
            "url": self.config.url,
            "cluster-id": self.config.cluster_id,
            "peers": self.connected_peers(),
            "connections": {"servers": server_links, "repo-clients": clients},
            "servers": servers,
            "domains": self.domain_heads(),
            "cluster-document": {
                "document-id": self.cluster.document_id,
                "heads": sorted(h.hex() for h in self.cluster.doc.get_heads()),
            },
        }

    # ------------------------------------------------------------ gossip's document store

    def get_document(self, document_id: str) -> Document | None:
        return self.document(document_id)

    def accept_document(self, document_id: str, peer: PeerInfo) -> Document | None:
        """Servers may hand us any document of the cluster; repo clients create none."""
        return self.adopt_empty_document(document_id) if peer.is_server else None

    def shared_documents(self, peer: PeerInfo) -> Iterable[str]:
        """Servers are offered everything; repo clients ask for what they want."""
        return self.document_ids() if peer.is_server else []

    def _schedule_gossip(self, document_id: str) -> None:
        self.gossip.document_changed(document_id)
        self._wake_all()

    def _wake_all(self) -> None:
        """Wake the senders of the connections that have something to send."""
        for conn_id, link in self._net.links.items():
            if self.gossip.has_data_to_send(conn_id):
                link.wake.set()

    def _relays_can_wait(self) -> bool:
        """In a full mesh (every server dials every server) with all of this server's links
        up, the others are linked to each other too, as far as we can tell: changes reach
        them from their origin. Without the mesh, this server may be their only way."""
        if not self._net.mesh:
            return False
        others = set(self.cluster.servers()) - {self.name}
        return others <= set(self.connected_peers())

    def _schedule_relays(self) -> None:
        if self._net.relay_timer is None and self.gossip.relays_pending():
            loop = asyncio.get_running_loop()
            self._net.relay_timer = loop.call_later(self.limits.relay_delay, self._release_relays)

    def _release_relays(self) -> None:
        self._net.relay_timer = None
        self.gossip.release_relays()
        self._wake_all()

    # ------------------------------------------------------------ network: lifecycle

    async def start(
        self, *, listen: bool = True, mesh: bool = True, peers: Iterable[str] = ()
    ) -> None:
        """Listen (unless `listen` is False), then dial the servers and peers to dial.

        Every server of the cluster document is dialed when `mesh` is true; besides them,
        or alone when it is false, the configured peers and `peers`. Port 0 binds a free
        port; the port and the URL it gives are saved in the configuration and in the
        cluster document, so a restart listens where the other servers dial.
        """
        net = self._net
        if net.running:
            raise RuntimeError("the node is already started")
        net.running = True
        net.mesh = mesh
        net.extra_peers = [_normalise_url(url) for url in peers]
        if listen:
            await self._listen()
            await self.register_self()
        self._refresh_dial_targets()

    async def stop(self) -> None:
        """Stop accepting, close every connection, then close the storage."""
        net = self._net
        if net.running:
            net.running = False
            if net.relay_timer is not None:
                net.relay_timer.cancel()
                net.relay_timer = None
            outgoing = [link.ws for link in net.links.values() if link.outgoing]
            await asyncio.gather(
                *(ws.close(CloseCode.GOING_AWAY) for ws in outgoing), return_exceptions=True
            )
            dialers = [*net.dialers.values(), *net.retired]
            for task in dialers:
                task.cancel()
            if net.server is not None:
                net.server.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(net.server.wait_closed(), CLOSE_TIMEOUT * 2)
            await asyncio.gather(*dialers, *net.background, return_exceptions=True)
            net.dialers.clear()
        await self.close()

    def request_stop(self) -> None:
        """Make `serve_forever` return (signal handlers call this)."""
        self._net.stop_requested.set()

    async def serve_forever(
        self,
        *,
        on_ready: Callable[[str], None] | None = None,
        mesh: bool = True,
        peers: Iterable[str] = (),
    ) -> None:
        """Run until SIGINT or SIGTERM (or `request_stop`), then shut down gracefully.

        `on_ready(url)` is called once the listener is bound. Raises the storage error that
        stopped the server, if one did.
        """
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, self.request_stop)
        try:
            await self.start(mesh=mesh, peers=peers)
            if on_ready is not None:
                on_ready(self.config.url)
            await self._net.stop_requested.wait()
            log.info("stopping")
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await self.stop()
        if self._net.fatal is not None:
            raise self._net.fatal

    async def _listen(self) -> None:
        config = self.config
        server = await serve(
            self._handle_connection,
            config.listen_host,
            config.listen_port,
            process_request=self._route_request,
            create_connection=_ListenerConnection,
            max_size=self.limits.max_message_size,
            ssl=self._server_ssl(),
            compression=None,
            close_timeout=CLOSE_TIMEOUT,
        )
        self._net.server = server
        port = int(server.sockets[0].getsockname()[1])
        url = _advertised_url(config, port)
        if (port, url) != (config.listen_port, config.url):
            config.listen_port, config.url = port, url
            await self.storage.set_meta(CONFIG_KEY, config.to_meta())
        log.info("listening on %s (%s:%d)", url, config.listen_host, port)

    def _server_ssl(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if not cert and not key:
            return None
        if not cert or not key:
            raise ClusterError("TLS needs both a certificate and its key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    def _client_ssl(self, url: str) -> ssl.SSLContext | None:
        """For wss peers: the system's trust store plus our own certificate, so that the
        servers of a cluster sharing one self-signed certificate trust each other."""
        if not url.startswith("wss:"):
            return None
        return client_ssl_context(self.config.tls_cert)

    def _fail_fatally(self, exc: BaseException) -> None:
        log.critical("storage failed; stopping the server: %s", exc)
        if self._net.fatal is None:
            self._net.fatal = exc
        self.request_stop()

    # ------------------------------------------------------------ network: listener

    def _route_request(
        self, connection: ServerConnection, request: HttpRequest
    ) -> HttpResponse | None:
        path = urlsplit(request.path).path
        if path in (SYNC_PATH, API_PATH):
            return None
        return connection.respond(
            HTTPStatus.NOT_FOUND, f"nothing at {path}; endpoints: {SYNC_PATH}, {API_PATH}\n"
        )

    async def _handle_connection(self, ws: ServerConnection) -> None:
        assert ws.request is not None, "the handler runs after the opening handshake"
        parts = urlsplit(ws.request.path)
        if parts.path == API_PATH:
            await self._serve_api(ws)
            return
        link = _Link(self._net.next_conn_id("in"), ws, outgoing=False)
        link.query = dict(parse_qsl(parts.query))
        await self._run_link(link)

    async def _serve_api(self, ws: ServerConnection) -> None:
        conn = self._admin_api().connect(_format_address(ws.remote_address))
        idle_timeout = self.limits.idle_timeout
        try:
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), idle_timeout)
                except TimeoutError:
                    await ws.close(CloseCode.NORMAL_CLOSURE, f"idle for {idle_timeout:g} s")
                    return
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                await ws.send(await conn.handle_text(text))
        except ConnectionClosed:
            pass
        finally:
            await conn.close()

    def _admin_api(self) -> AdminAPI:
        """The admin API, created on first use."""
        if self._net.api is None:
            throttle = auth.LoginThrottle(
                limit=self.limits.login_failures, base_delay=self.limits.login_lockout
            )
            self._net.api = AdminAPI(self, throttle=throttle)
        return self._net.api

    # ------------------------------------------------------------ network: connections

    async def _run_link(self, link: _Link) -> None:
        """Drive one /sync connection until it closes: a reader here, a sender task."""
        gossip, net = self.gossip, self._net
        metadata = self._dialer_metadata(link) if link.outgoing else {}
        gossip.open_connection(link.conn_id, dialer=link.outgoing, local_metadata=metadata)
        net.links[link.conn_id] = link
        sender = asyncio.create_task(self._send_loop(link), name=f"send {link.conn_id}")
        link.wake.set()
        try:
            await self._receive_loop(link)
            if gossip.is_closed(link.conn_id):
                link.wake.set()  # the sender flushes the error frame, then closes
                with contextlib.suppress(TimeoutError, ConnectionClosed):
                    await asyncio.wait_for(asyncio.shield(sender), CLOSE_TIMEOUT)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            net.links.pop(link.conn_id, None)
            gossip.close_connection(link.conn_id)
            if link.peer_name is not None:
                log.info("disconnected from %s", link.describe())
                if link.failure is None:
                    net.oversize_reported.discard(link.peer_name)

    async def _receive_loop(self, link: _Link) -> None:
        """Apply the peer's frames in batches: everything that arrived while the previous
        batch was being persisted goes to disk in one write per document, then the
        senders get to forward it before the next batch holds the documents again."""
        frames: asyncio.Queue[str | bytes | None] = asyncio.Queue(RECEIVE_QUEUE_FRAMES)
        reader = asyncio.create_task(self._read_frames(link, frames), name=f"read {link.conn_id}")
        try:
            while not (reader.done() and frames.empty()):
                batch = [await frames.get()]
                while not frames.empty():
                    batch.append(frames.get_nowait())
                if not await self._apply_frames(link, batch):
                    return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_frames(self, link: _Link, frames: asyncio.Queue[str | bytes | None]) -> None:
        """Move the connection's frames into `frames`; None marks its end."""
        try:
            async for frame in self._frames(link):
                await frames.put(frame)
        except ConnectionClosed as exc:
            self._note_close(link, exc)
        finally:
            # The end mark; if the queue is full the receiver sees this task done instead.
            with contextlib.suppress(asyncio.QueueFull):
                frames.put_nowait(None)

    def _note_close(self, link: _Link, exc: ConnectionClosed) -> None:
        """Log why the socket closed. A frame over either side's size limit will be over it
        again on the next link: that link failed (its dialer backs off), and is reported
        once per peer rather than at every redial."""
        oversize = self._oversize_failure(exc)
        if oversize is None:
            log.log(_close_log_level(exc), "connection %s closed: %r", link.describe(), str(exc))
            return
        link.failure = oversize
        who = link.peer_name or link.target or _format_address(link.ws.remote_address)
        reported = self._net.oversize_reported
        level = logging.DEBUG if who in reported else logging.WARNING
        reported.add(who)
        retry = "; redialing with backoff" if link.outgoing else ""
        log.log(level, "link %s failed: %s%s", link.describe(), oversize, retry)

    def _oversize_failure(self, exc: ConnectionClosed) -> str | None:
        """What a close for a frame over the size limit means, or None for other closes."""
        we_closed = exc.sent is not None and not exc.rcvd_then_sent
        first = exc.sent if we_closed else exc.rcvd
        if first is None or first.code != CloseCode.MESSAGE_TOO_BIG:
            return None
        if we_closed:
            limit = size_text(self.limits.max_message_size)
            return f"it sent a message over this server's limit of {limit} (--max-message-size)"
        reason = first.reason or "message too large"
        return f"it refused a message of ours ({reason!r}; see its --max-message-size)"

    async def _apply_frames(self, link: _Link, batch: list[str | bytes | None]) -> bool:
        """Apply a batch of frames; False once the connection is over."""
        gossip, net = self.gossip, self._net
        changed: dict[str, list[bytes]] = {}
        """Per document changed by this batch: its heads before the batch's first change."""
        chunks: dict[str, list[bytes]] = {}
        counts: dict[str, int] = {}
        going_on = True
        for frame in batch:
            if frame is None:
                going_on = False
                break
            if isinstance(frame, str):
                message = "text frames are not part of the automerge-repo protocol"
                log.warning("closing %s: %s", link.describe(), message)
                link.failure = message
                gossip.reject(link.conn_id, message)
                going_on = False
                break
            if net.peer_heads is not None:
                self._note_peer_heads(frame)
            for event in gossip.receive(link.conn_id, frame):
                if isinstance(event, DocumentChanged):
                    changed.setdefault(event.document_id, event.before_heads)
                    chunks.setdefault(event.document_id, []).extend(event.chunks)
                    counts[event.document_id] = counts.get(event.document_id, 0) + 1
                else:
                    await self._handle_event(link, event)
            if gossip.is_closed(link.conn_id):
                going_on = False
                break
        relay_later = bool(changed) and self._relays_can_wait()
        for document_id, before_heads in changed.items():
            await self._persist_from_peer(
                document_id, before_heads, chunks[document_id], counts[document_id], relay_later
            )
        self._schedule_relays()
        self._wake_all()
        net.progress.set()
        # Let the woken senders forward what was just persisted before the next batch.
        await asyncio.sleep(0)
        return going_on and not gossip.is_closed(link.conn_id)

    async def _frames(self, link: _Link) -> AsyncIterator[str | bytes]:
        """The frames of a /sync connection until it closes. A peer that dialed us must be
        admitted within the handshake timeout, whatever it sends meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.handshake_timeout
        # Once the hub has closed the connection nothing more is read: the sender closes
        # the socket at once instead of waiting for the peer or the admission deadline.
        while not self.gossip.is_closed(link.conn_id):
            try:
                if link.outgoing or self.gossip.peer(link.conn_id) is not None:
                    yield await link.ws.recv()
                else:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows the
                    # cancellation of a reader whose frame arrived at the same moment,
                    # which left the socket open until the deadline.
                    async with asyncio.timeout_at(deadline):
                        frame = await link.ws.recv()
                    yield frame
            except ConnectionClosedOK:
                return
            except TimeoutError:
                message = f"not admitted within {self.limits.handshake_timeout:g} s"
                log.warning("closing %s: %s", link.describe(), message)
                link.failure = message
                self.gossip.reject(link.conn_id, message)
                return

    async def _send_loop(self, link: _Link) -> None:
        """The only writer of the socket: what the hub has to send, whenever woken."""
        gossip = self.gossip
        while True:
            await link.wake.wait()
            link.wake.clear()
            for frame in gossip.data_to_send(link.conn_id):
                await link.ws.send(frame)
            if gossip.is_closed(link.conn_id):
                reason = _close_reason(link.failure)
                code = CloseCode.POLICY_VIOLATION if link.failure else CloseCode.NORMAL_CLOSURE
                await link.ws.close(code, reason)
                return

    async def _handle_event(self, link: _Link, event: Event) -> None:
        match event:
            case JoinReceived():
                await self._admit(link, event.join)
            case PeerConnected():
                log.info("connected to %s", link.describe())
                self._net.url_names[link.target] = str(link.peer_name)
                self._drop_duplicate_links(str(link.peer_name))
            case DocumentUnavailableFromPeer():
                log.debug("%s does not have %s", link.describe(), event.document_id)
            case ConnectionFailed():
                link.failure = event.message
                log.warning("closing %s: %r", link.describe(), event.message)

    async def _persist_from_peer(
        self,
        document_id: str,
        before_heads: list[bytes],
        chunks: list[bytes],
        events: int,
        relay_later: bool,
    ) -> None:
        """Persist, then let the hub forward. If the disk fails the document stays held:
        nothing that is not on disk here leaves this server."""
        try:
            await self.persist_received(document_id, before_heads, chunks)
        except StorageError as exc:
            if self._net.running:  # else the storage closed under a shutdown
                self._fail_fatally(exc)
            return
        for _ in range(events):
            self.gossip.persisted(document_id, relay_later=relay_later)

    # ------------------------------------------------------------ network: authentication

    def _identity(self) -> dict[str, Any]:
        config = self.config
        return {
            "cluster": config.cluster_id,
            "server": config.name,
            "name": config.name,
            "region": config.region,
            "role": config.role,
            "url": config.url,
            "cluster-document": config.cluster_document_id,
        }

    def _dialer_metadata(self, link: _Link) -> dict[str, Any]:
        """Our join metadata: who we are and a fresh proof of the cluster secret."""
        creds = auth.ServerCredentials.create(
            self.config.secret, self.config.cluster_id, self.config.name
        )
        link.nonce = creds.nonce
        return {"isEphemeral": False, METADATA_KEY: {**self._identity(), **creds.to_metadata()}}

    async def _admit(self, link: _Link, join: Join) -> None:
        """Accept or refuse the peer whose join arrived on a listening connection."""
        metadata = dict(join.peer_metadata or {})
        try:
            if METADATA_KEY in metadata:
                info, reply = self._admit_server(join, metadata[METADATA_KEY])
                link.peer_name = str(info.metadata.get("server"))
            else:
                info, reply = await self._admit_repo_client(link, join)
        except CrdtmdsError as exc:
            log.warning("refused %s: %r", link.describe(), exc.message)
            link.failure = exc.message
            self.gossip.reject(link.conn_id, exc.message)
            return
        self.gossip.accept(link.conn_id, info, reply)
        log.info("accepted %s", link.describe())
        if link.peer_name is not None:
            self._drop_duplicate_links(link.peer_name)

    def _admit_server(self, join: Join, meta: Any) -> tuple[PeerInfo, dict[str, Any]]:
        creds = auth.ServerCredentials.from_metadata(meta)
        self._net.verifier(self.config).verify(creds)
        cluster_document = meta.get("cluster-document")
        if cluster_document not in (None, "", self.config.cluster_document_id):
            raise AuthenticationFailed("the server serves another cluster document")
        if creds.server == self.name:
            raise AuthenticationFailed(f"'{self.name}' is the name of this server itself")
        info = PeerInfo(peer_id=join.sender_id, metadata=dict(meta), may_write=True, is_server=True)
        proof = auth.answer_proof(
            self.config.secret, self.config.cluster_id, self.name, creds.nonce
        )
        return info, {"isEphemeral": False, METADATA_KEY: {**self._identity(), "proof": proof}}

    async def _admit_repo_client(self, link: _Link, join: Join) -> tuple[PeerInfo, dict[str, Any]]:
        """An administrator's automerge-repo client: credentials in the URL query."""
        source = _format_address(getattr(link.ws, "remote_address", None))
        admin, may_read = await self._admin_api().authenticate_repo_client(dict(link.query), source)
        link.admin = str(admin)
        info = PeerInfo(
            peer_id=join.sender_id,
            metadata=dict(join.peer_metadata or {}),
            may_write=False,
            may_read=self._repo_client_reader(may_read),
            is_server=False,
        )
        identity = {k: v for k, v in self._identity().items() if k in ("name", "region", "role")}
        return info, {"isEphemeral": False, METADATA_KEY: identity}

    def _repo_client_reader(self, may_read: Callable[[str], bool]) -> Callable[[str], bool]:
        """Domains only (never the cluster document, which holds password hashes)."""

        def reader(document_id: str) -> bool:
            return document_id in self.listed_domain_ids() and bool(may_read(document_id))

        return reader

    def _verify_listener(self, conn_id: str, peer: Peer) -> PeerInfo:
        """Gossip's check of a listener's `peer` reply on a connection we dialed."""
        link = self._net.links.get(conn_id)
        if link is None:
            raise AuthenticationFailed("unknown connection")
        meta = check_listener_proof(peer, self.config.secret, self.config.cluster_id, link.nonce)
        if meta.get("cluster-document") != self.config.cluster_document_id:
            raise AuthenticationFailed("the peer serves another cluster document")
        link.peer_name = str(meta.get("server"))
        return PeerInfo(peer_id=peer.sender_id, metadata=meta, may_write=True, is_server=True)

    # ------------------------------------------------------------ network: dialing

    def _server_links(self, name: str) -> list[_Link]:
        return [
            link
            for link in self._net.links.values()
            if link.peer_name == name and self.gossip.peer(link.conn_id) is not None
        ]

    def _drop_duplicate_links(self, name: str) -> None:
        """When two servers dial each other, the one with the larger name closes its own
        outgoing link (and its dialer waits while the incoming one lives). Only the dialer
        closes, so a new link is never refused because an old one only looks alive; and
        nothing is lost, since every link syncs everything.

        It closes once the new link has heard from the peer about every document (at
        most `DUPLICATE_LINK_GRACE` seconds later): until then, changes sent on the new
        link would wait a round trip, so the old one carries them."""
        if self.name > name:
            self._net.spawn(self._close_duplicate_outgoing(name))

    async def _close_duplicate_outgoing(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DUPLICATE_LINK_GRACE
        while True:
            incoming = [link for link in self._server_links(name) if not link.outgoing]
            if not incoming:
                return  # no link from that server (any more): nothing to close
            if loop.time() >= deadline or any(
                self.gossip.is_warm(link.conn_id) for link in incoming
            ):
                break
            await asyncio.sleep(DUPLICATE_LINK_POLL)
        for link in self._server_links(name):
            if link.outgoing and not link.closing:
                link.closing = True
                log.info("closing duplicate link %s", link.describe())
                self._net.spawn(link.ws.close(CloseCode.NORMAL_CLOSURE, "duplicate link"))

    def _served_by_incoming(self, url: str) -> bool:
        """Whether the server at `url` (one with a smaller name) already dialed us."""
        name = self._net.url_names.get(url)
        if name is None or self.name < name:
            return False
        return any(not link.outgoing for link in self._server_links(name))

    def _dial_targets(self) -> set[str]:
        net = self._net
        targets = {_normalise_url(url) for url in self.config.peers} | set(net.extra_peers)
        if net.mesh:
            for name, entry in self.cluster.servers().items():
                url = entry.get("url")
                if name != self.name and isinstance(url, str):
                    targets.add(_normalise_url(url))
        targets.discard(_normalise_url(self.config.url))
        return {url for url in targets if _dialable(url)}

    def _refresh_dial_targets(self) -> None:
        """One dialer per URL to dial; dialers of URLs no longer listed stop."""
        net = self._net
        wanted = self._dial_targets()
        for url in list(net.dialers):
            if url not in wanted:
                task = net.dialers.pop(url)
                task.cancel()
                net.retired.add(task)
                task.add_done_callback(net.retired.discard)
        if net.mesh:
            for name, entry in self.cluster.servers().items():
                if isinstance(entry.get("url"), str) and name != self.name:
                    net.url_names.setdefault(_normalise_url(entry["url"]), name)
        for url in sorted(wanted - net.dialers.keys()):
            net.dialers[url] = asyncio.create_task(self._dial_forever(url), name=f"dial {url}")

    async def _dial_forever(self, url: str) -> None:
        """Keep one connection to `url`, redialing with capped exponential backoff."""
        delay = BACKOFF_INITIAL
        reported = False
        while self._net.running:
            if self._served_by_incoming(url):
                await asyncio.sleep(DUPLICATE_LINK_PAUSE)
                continue
            link: _Link | None = None
            try:
                async with connect(
                    _endpoint(url, SYNC_PATH),
                    ssl=self._client_ssl(url),
                    max_size=self.limits.max_message_size,
                    compression=None,
                    proxy=None,
                    open_timeout=OPEN_TIMEOUT,
                    close_timeout=CLOSE_TIMEOUT,
                ) as ws:
                    link = _Link(self._net.next_conn_id("out"), ws, outgoing=True)
                    link.target = url
                    await self._run_link(link)
            except InvalidURI as exc:
                log.error("not dialing %r: %r", url, str(exc))
                return
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                if not reported:
                    log.info("cannot reach %r: %r", url, str(exc))
                    reported = True
            except Exception:  # a bug must not end the redialing for good
                log.exception("connection to %r failed", url)
            if link is not None and link.peer_name is not None and link.failure is None:
                delay, reported = BACKOFF_INITIAL, False
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)

    # ------------------------------------------------------------ joining

    async def fetch_from_peers(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Join's second half: dial the configured peer (without listening), wait until
        the cluster document and every domain match what the peer announced, and register
        this server in the cluster document."""
        self._net.peer_heads = {}
        await self.start(listen=False, mesh=False)
        await self._wait_for(
            self._caught_up_with_peer, timeout, "the cluster document and every domain"
        )
        if self.name in self.cluster.servers():
            raise NameInUse(
                f"the cluster already has a server named '{self.name}'",
                details={"name": self.name},
            )
        await self.register_self()
        try:
            await self._wait_for(self._peer_has_our_cluster_heads, 5.0, "the registration")
        except ClusterError:
            log.warning("the peer has not confirmed the registration; it will follow on start")

    def _note_peer_heads(self, frame: bytes) -> None:
        try:
            message = decode(frame, max_size=self.limits.max_message_size)
        except ProtocolError:
            return
        if isinstance(message, Sync | Request) and self._net.peer_heads is not None:
            heads = sync_message_heads(message.data)
            if heads is not None:
                self._net.peer_heads[message.document_id] = heads

    def _caught_up_with_peer(self) -> bool:
        announced = self._net.peer_heads or {}
        if not self.cluster.is_ready():
            return False
        for document_id in (self.cluster.document_id, *self.listed_domain_ids()):
            doc = self.document(document_id)
            theirs = announced.get(document_id)
            if doc is None or theirs is None or sorted(doc.get_heads()) != sorted(theirs):
                return False
        return True

    def _peer_has_our_cluster_heads(self) -> bool:
        theirs = (self._net.peer_heads or {}).get(self.cluster.document_id)
        return theirs is not None and sorted(theirs) == sorted(self.cluster.doc.get_heads())

    async def _wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        progress = self._net.progress
        while True:
            progress.clear()
            if condition():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), min(remaining, 0.5))


# ---------------------------------------------------------------- network state


class _ListenerConnection(ServerConnection):
    """A listener's connection whose close for an oversize frame names the limit, so that
    a client can tell a refused request from a lost server (websockets' own reason only
    counts bytes)."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)
        fail = protocol.fail

        def fail_with_limit(code: int, reason: str = "") -> None:
            if code == CloseCode.MESSAGE_TOO_BIG and protocol.max_message_size is not None:
                reason = too_large_message(self._unit(), protocol.max_message_size)
            fail(code, reason)

        protocol.fail = fail_with_limit  # type: ignore[method-assign]

    def _unit(self) -> str:
        path = urlsplit(self.request.path).path if self.request is not None else ""
        return "request" if path == API_PATH else "message"


@dataclass(eq=False, slots=True)
class _Link:
    """One /sync WebSocket connection."""

    conn_id: str
    ws: Any
    outgoing: bool
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    query: dict[str, str] = field(default_factory=dict)
    target: str = ""
    nonce: str = ""
    """The nonce of our credentials (connections we dialed)."""
    peer_name: str | None = None
    admin: str | None = None
    failure: str | None = None
    closing: bool = False

    def describe(self) -> str:
        # Names and URLs come from peers and the cluster document: quoted and escaped.
        who = (
            f"server {self.peer_name!r}"
            if self.peer_name
            else f"admin {self.admin!r}"
            if self.admin
            else "peer"
        )
        where = (
            repr(self.target)
            if self.target
            else _format_address(getattr(self.ws, "remote_address", None))
        )
        return f"{who} ({self.conn_id}, {where})"


@dataclass(slots=True)
class _Network:
    running: bool = False
    mesh: bool = True
    extra_peers: list[str] = field(default_factory=list)
    server: Server | None = None
    links: dict[str, _Link] = field(default_factory=dict)
    dialers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    retired: set[asyncio.Task[None]] = field(default_factory=set)
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after every processed frame (what `_wait_for` waits on)."""
    peer_heads: dict[str, list[bytes]] | None = None
    """While joining: the latest heads the peer announced, per document."""
    url_names: dict[str, str] = field(default_factory=dict)
    """Server names learned per dialed URL (from the cluster document or a handshake)."""
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    api: AdminAPI | None = None
    fatal: BaseException | None = None
    oversize_reported: set[str] = field(default_factory=set)
    """Peers whose links failed for a frame over a size limit, reported once (see
    `Node._note_close`) until a link with them ends normally."""
    relay_timer: asyncio.TimerHandle | None = None
    """Pending `release_relays` (see `Limits.relay_delay`)."""
    _verifier: auth.NonceVerifier | None = None
    _counter: int = 0

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run `coroutine` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def next_conn_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    def verifier(self, config: NodeConfig) -> auth.NonceVerifier:
        """One replay memory per server lifetime."""
        if self._verifier is None:
            self._verifier = auth.NonceVerifier(config.secret, config.cluster_id)
        return self._verifier


# ---------------------------------------------------------------- joining a cluster


async def join_cluster(
    data_dir: str | Path,
    *,
    name: str,
    listen_host: str,
    listen_port: int,
    region: str,
    peer: str,
    secret: str,
    url: str = "",
    tls_cert: str | None = None,
    tls_key: str | None = None,
    timeout: float = JOIN_TIMEOUT,
) -> NodeConfig:
    """Make a Secondary: prove the secret to `peer`, learn the cluster document id from
    its answer, then fetch the cluster document and every domain and register.

    Raises AuthenticationFailed when the peer refuses the secret (nothing is written),
    ClusterError when the peer cannot be reached or the fetch times out (what was written
    is removed, so the join can be retried).
    """
    path = Path(data_dir)
    if (path / DATABASE_FILE).exists():
        raise ClusterError(f"{path} already holds a crdtmds server")
    cluster_id = auth.cluster_id_of_secret(secret)
    peer = _normalise_url(peer)
    meta = await asyncio.wait_for(
        introduce(peer, secret, cluster_id, name, client_ssl_context(tls_cert)), timeout
    )
    config = await Node.prepare_join(
        path,
        name=name,
        listen_host=listen_host,
        listen_port=listen_port,
        url=url or advertised_url_for(listen_host, listen_port, tls=bool(tls_cert)),
        region=region,
        peer=peer,
        secret=secret,
        cluster_id=cluster_id,
        cluster_document_id=str(meta["cluster-document"]),
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    try:
        node = await Node.open(path)
        try:
            await node.fetch_from_peers(timeout)
        finally:
            await node.stop()
    except BaseException:
        _remove_database(path)
        raise
    return config


async def introduce(
    peer: str,
    secret: str,
    cluster_id: str,
    name: str,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Dial `peer` once with our proof of the secret; return its verified metadata."""
    creds = auth.ServerCredentials.create(secret, cluster_id, name)
    join = Join(
        sender_id=f"crdtmds-{name}-join-{secrets.token_hex(4)}",
        peer_metadata={
            "isEphemeral": False,
            METADATA_KEY: {**creds.to_metadata(), "name": name, "role": ROLE_SECONDARY},
        },
    )
    try:
        async with connect(
            _endpoint(peer, SYNC_PATH),
            ssl=ssl_context if peer.startswith("wss:") else None,
            compression=None,
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
        ) as ws:
            await ws.send(encode(join))
            frame = await ws.recv()
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise ClusterError(f"cannot reach {peer}: {exc}") from exc
    except ConnectionClosed as exc:
        raise ClusterError(f"{peer} closed the connection: {exc}") from exc
    if isinstance(frame, str):
        raise ClusterError(f"{peer} does not speak the automerge-repo protocol")
    message = decode(frame)
    if isinstance(message, Error):
        raise AuthenticationFailed(f"{peer} refused '{name}': {message.message}")
    if not isinstance(message, Peer):
        raise ClusterError(f"{peer} answered the join with an unexpected message")
    meta = check_listener_proof(message, secret, cluster_id, creds.nonce)
    if not isinstance(meta.get("cluster-document"), str) or not meta["cluster-document"]:
        raise ClusterError(f"{peer} did not name its cluster document")
    return meta


def check_listener_proof(peer: Peer, secret: str, cluster_id: str, nonce: str) -> dict[str, Any]:
    """The listener's crdtmds metadata, once its proof over our nonce checks out."""
    meta = (peer.peer_metadata or {}).get(METADATA_KEY)
    if not isinstance(meta, dict):
        raise AuthenticationFailed("the peer is not a crdtmds server")
    if meta.get("cluster") != cluster_id:
        raise AuthenticationFailed("the peer belongs to another cluster")
    expected = auth.answer_proof(secret, cluster_id, str(meta.get("server")), nonce)
    if not hmac.compare_digest(expected, str(meta.get("proof", ""))):
        raise AuthenticationFailed("the peer could not prove it knows the cluster secret")
    return dict(meta)


def client_ssl_context(extra_ca: str | None = None) -> ssl.SSLContext:
    """The system's trust store, plus `extra_ca` (a certificate file) when given."""
    context = ssl.create_default_context()
    if extra_ca:
        context.load_verify_locations(extra_ca)
    return context


def sync_message_heads(data: bytes) -> list[bytes] | None:
    """The sender's heads at the start of an Automerge sync message; None if malformed."""
    try:
        return read_sync_message_heads(data)
    except ProtocolError:
        return None


# ---------------------------------------------------------------- URLs and addresses


def _normalise_url(url: str) -> str:
    """`ws://host:port` without a trailing slash or a /sync path."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if path == SYNC_PATH:
        path = ""
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _endpoint(url: str, path: str) -> str:
    parts = urlsplit(_normalise_url(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path + path, "", ""))


def _dialable(url: str) -> bool:
    return peer_url_problem(url) is None


def peer_url_problem(url: str) -> str | None:
    """Why `url` cannot be dialed as a peer, or None when it can."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("ws", "wss"):
        return "expected ws://HOST:PORT or wss://HOST:PORT"
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "port 0 cannot be dialed"
    return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def advertised_url_for(host: str, port: int, *, tls: bool) -> str:
    """The URL other servers dial; empty while the port is still to be chosen (0)."""
    if port == 0:
        return ""
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    return f"{'wss' if tls else 'ws'}://{_url_host(host)}:{port}"


def _advertised_url(config: NodeConfig, port: int) -> str:
    """The configured URL, unless it is empty or names port 0; then one built from the
    listening address."""
    if config.url:
        try:
            configured_port = urlsplit(config.url).port
        except ValueError:
            configured_port = 0
        if configured_port != 0:
            return config.url
    return advertised_url_for(config.listen_host, port, tls=bool(config.tls_cert))


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{_url_host(str(address[0]))}:{address[1]}"
    return str(address)


def _close_log_level(exc: ConnectionClosed) -> int:
    """INFO for a normal close or a server going away, WARNING for anything else (a frame
    too big, a network failure)."""
    frame = exc.rcvd or exc.sent
    normal = frame is not None and frame.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
    return logging.INFO if normal else logging.WARNING


def _close_reason(message: str | None) -> str:
    """A WebSocket close reason (at most 123 bytes of UTF-8)."""
    reason = (message or "").encode()[:MAX_CLOSE_REASON]
    return reason.decode("utf-8", "ignore")


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            (path / (DATABASE_FILE + suffix)).unlink()


def _damaged_store_error(path: Path, problems: list[LoadProblem]) -> StorageCorruption:
    first = problems[0]
    where = first.table if first.row_id is None else f"{first.table} row {first.row_id}"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return StorageCorruption(
        f"{path}: stored document {first.document_id} does not load, {where}: "
        f"{first.message}{more}. Restore the data directory from a backup, or remove it "
        "and join the cluster again",
        details={
            "problems": [
                {"document-id": p.document_id, "table": p.table, "row": p.row_id,
                 "message": p.message}
                for p in problems
            ]
        },
    )  # fmt: skip


async def _create_data_dir(
    path: Path, config: NodeConfig, cluster_changes: list[tuple[bytes, bytes]]
) -> None:
    """A new server's data directory: its configuration and what it knows of the cluster."""
    if (path / DATABASE_FILE).exists():
        raise ClusterError(f"{path} already holds a crdtmds server")
    storage = await Storage.open(path / DATABASE_FILE)
    try:
        if cluster_changes:
            await storage.append_changes(config.cluster_document_id, cluster_changes)
        await storage.set_meta(CONFIG_KEY, config.to_meta())
    finally:
        await storage.close()
