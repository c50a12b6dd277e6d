"""A crdtmds server: the composition root, the only place that constructs the services,
the gossip hub, the network side and the doors, and wires them together with listeners
and hooks (no service imports another layer's upper half).

Open one with `Server.open(data_dir)` after `bootstrap.init_cluster` or
`bootstrap.join_cluster`; then `serve_forever()` (or `start()` ... `stop()`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import signal
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from automerge.core import Document

from crdtmds.api.call import Services
from crdtmds.api.dispatch import AdminAPI
from crdtmds.api.tasks import Tasks
from crdtmds.app.cluster_admin import ClusterAdmin
from crdtmds.app.documents import Documents
from crdtmds.app.heads_book import HeadsBook
from crdtmds.app.lifecycle import Lifecycle
from crdtmds.app.live_events import LiveEvents
from crdtmds.app.logins import Logins
from crdtmds.app.persistence import Persister
from crdtmds.app.residency import Residency, ResidencyLimits
from crdtmds.app.sessions import Sessions
from crdtmds.app.status import StatusView
from crdtmds.config import (
    CONFIG_KEY,
    DATABASE_FILE,
    WEB_API_CERT_FILE,
    WEB_API_KEY_FILE,
    Limits,
    ServerConfig,
    new_server_id,
)
from crdtmds.core import auth
from crdtmds.core.cluster import ClusterDocument
from crdtmds.errors import ClusterError, StorageCorruption, StorageError
from crdtmds.net.admission import Admission
from crdtmds.net.catchup import JOIN_TIMEOUT, CatchUp
from crdtmds.net.link_driver import LinkDriver, LinkHooks
from crdtmds.net.links import Links
from crdtmds.net.mesh import Mesh
from crdtmds.net.relays import Relays
from crdtmds.net.urls import advertised_url
from crdtmds.storage import LoadProblem, Storage
from crdtmds.storage.datadir_lock import DataDirLock
from crdtmds.storage.document_reader import DocumentReader
from crdtmds.sync.gossip import Gossip
from crdtmds.sync.summary_exchange import SummaryExchanges
from crdtmds.tls import certificate_fingerprints, make_self_signed, server_ssl_context
from crdtmds.transports.console import ConsoleDoor
from crdtmds.transports.http_api import HttpsListener, WebApiDoor
from crdtmds.transports.ws import WebSocketListener
from crdtmds.transports.ws_api import serve_api

log = logging.getLogger("crdtmds.server")

HEADS_FLUSH_INTERVAL = 2.0
"""Seconds between two writes of the heads records (`HeadsBook.flush`)."""


class Server:
    """One server, wired. Its parts are public for the tests and the benchmarks."""

    def __init__(
        self, config: ServerConfig, storage: Storage, data_dir: Path, limits: Limits | None = None
    ) -> None:
        self.config = config
        self.storage = storage
        self.data_dir = data_dir
        self.limits = limits = limits or Limits(max_message_size=config.max_message_size)
        self._build_services()
        self._build_network()
        self.listener: WebSocketListener | None = None
        self.web_listener: HttpsListener | None = None
        self.running = False
        self.fatal: BaseException | None = None
        """The storage failure that stopped the server, if one did."""
        self._stop_requested = asyncio.Event()
        self.lock: DataDirLock | None = None
        """The data directory's lock, held from `open` to `close`."""

    def _build_services(self) -> None:
        config, limits, storage = self.config, self.limits, self.storage
        self.reader, self.documents, self.heads = _domain_registry(config, limits, storage)
        documents = self.documents
        self.persister = persister = Persister(storage, documents, config.compact_threshold)
        peer_id = f"crdtmds-{config.name}-{secrets.token_hex(4)}"
        self.hub = Gossip(
            peer_id,
            documents,
            max_message_size=limits.max_message_size,
            max_documents_per_connection=limits.max_documents_per_connection,
            max_sync_message_size=limits.max_sync_message_size,
            on_peer=lambda conn_id, peer: self.admission.verify_listener(conn_id, peer),
            summaries=SummaryExchanges(self.heads, peer_id, config.cluster_document_id),
        )
        self.sessions = Sessions(storage, documents, persister, self.hub, config.name)
        self.cluster_admin = ClusterAdmin(config, limits, documents, persister)
        throttle = auth.LoginThrottle(limit=limits.login_failures, base_delay=limits.login_lockout)
        self.logins = Logins(documents, self.sessions, config.secret, throttle=throttle)
        self.lifecycle = Lifecycle(documents, self.sessions, self.logins, persister)
        self.status = StatusView(config, documents)
        self.live_events = LiveEvents(documents)
        _pin_busy_domains(documents, self.sessions, self.hub, self.persister)
        self.api = AdminAPI(
            Services(
                config, documents, self.sessions, self.cluster_admin, self.logins, self.status,
                Tasks(),
            )
        )  # fmt: skip

    def _build_network(self) -> None:
        config, limits, documents, hub = self.config, self.limits, self.documents, self.hub
        self.links = links = Links(hub)
        self.admission = Admission(config, documents, self.logins)
        self.relays = Relays(hub, links, documents, config.name, limits.relay_delay)
        self.hooks = LinkHooks(on_storage_failure=self._fail_fatally, running=lambda: self.running)
        self.driver = LinkDriver(
            hub, links, self.persister, self.admission, self.relays, limits, self.hooks
        )
        self.mesh = Mesh(config, limits, documents, hub, links, self.driver)
        self.hooks.on_peer_connected = self.mesh.on_peer_connected
        self.status.connections = links.connections
        documents.on_changed(self._offer_to_peers)
        documents.on_cluster_updated(self.mesh.refresh)
        documents.on_cluster_updated(self._stop_if_removed)

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------ opening and closing

    @classmethod
    async def open(cls, data_dir: str | Path, *, limits: Limits | None = None) -> Server:
        """Load a server from its data directory: every stored document and session.

        Without `limits`, the defaults apply (and the stored maximum message size)."""
        path = Path(data_dir)
        if not (path / DATABASE_FILE).exists():
            raise ClusterError(f"{path} holds no crdtmds server (run init or join first)")
        lock = DataDirLock.acquire(path)
        try:
            storage = await Storage.open(path / DATABASE_FILE)
        except BaseException:
            lock.release()
            raise
        try:
            await storage.check_writable()
            meta = await storage.get_meta(CONFIG_KEY)
            if not isinstance(meta, dict):
                raise StorageError(f"{path} has no server configuration")
            config = ServerConfig.from_meta(meta)
            if not config.server_id:  # a data directory made before server ids
                config.server_id = new_server_id()
                await storage.set_meta(CONFIG_KEY, config.to_meta())
            server = cls(config, storage, path, limits)
            server.lock = lock
            await _load_catalogue(server)
            await server.sessions.restore_stored(path)
        except BaseException:
            await storage.close()
            lock.release()
            raise
        return server

    async def close(self) -> None:
        await self.heads.close()
        self.reader.close()
        await self.storage.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    async def relocate(self, host: str | None, port: int | None, url: str | None) -> None:
        """A new listen address and advertised URL (`start --listen/--url`), saved in the
        configuration; `start` then lists the URL in the cluster document, so that the
        other servers dial it. A new address without a URL advertises one derived from it."""
        config = self.config
        if host is not None and port is not None:
            config.listen_host, config.listen_port = host, port
            if url is None:
                config.url = ""
        if url is not None:
            config.url = url
        await self.storage.set_meta(CONFIG_KEY, config.to_meta())

    # ------------------------------------------------------------ running

    async def start(
        self, *, listen: bool = True, mesh: bool = True, peers: Iterable[str] = (),
        dial_urls: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Listen (unless `listen` is False), then dial the servers and peers to dial.

        Every server of the cluster document is dialed when `mesh` is true (at its URL in
        `dial_urls` if named there); besides them, or alone when it is false, the
        configured peers and `peers`. Port 0 binds a free port; the port and the URL it
        gives are saved in the configuration and in the cluster document, so a restart
        listens where the other servers dial.
        """
        if self.running:
            raise RuntimeError("the server is already started")
        if self.documents.cluster.is_removed(self.config.server_id):
            raise ClusterError(_removed_message(self.config))
        self.running = True
        self.relays.mesh = mesh
        if listen:
            await self._listen()
            await self._listen_web_api()
            await self.cluster_admin.register_self()
        self.mesh.start(full=mesh, peers=peers, dial_urls=dial_urls)
        self.heads.start_flushing(HEADS_FLUSH_INTERVAL)

    async def stop(self) -> None:
        """Stop accepting, close every link, then close the storage."""
        if self.running:
            self.running = False
            self.relays.cancel()
            await self.mesh.stop()
            if self.listener is not None:
                await self.listener.stop()
            if self.web_listener is not None:
                self.live_events.close_all()  # the console's streams end at once
                await self.web_listener.stop()
            await asyncio.gather(*self.links.background, return_exceptions=True)
        await self.close()

    def request_stop(self) -> None:
        """Make `serve_forever` return (signal handlers call this)."""
        self._stop_requested.set()

    async def serve_forever(
        self, *, on_ready: Callable[[str], None] | None = None, mesh: bool = True,
        peers: Iterable[str] = (), dial_urls: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Run until SIGINT or SIGTERM (or `request_stop`), then shut down gracefully.

        `on_ready(url)` is called once the listener is bound. Raises the storage error that
        stopped the server, if one did.
        """
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, self.request_stop)
        try:
            await self.start(mesh=mesh, peers=peers, dial_urls=dial_urls)
            if on_ready is not None:
                on_ready(self.config.url)
            await self._stop_requested.wait()
            log.info("stopping")
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await self.stop()
        if self.fatal is not None:
            raise self.fatal

    async def fetch_from_peers(
        self, timeout: float = JOIN_TIMEOUT, *, replace: bool = False
    ) -> None:
        """A join's second half: dial the configured peer (without listening), catch up
        with what it announces, and register this server in the cluster document."""
        catchup = CatchUp(
            self.documents,
            self.cluster_admin,
            self.links.progress,
            self.config.name,
            self.limits.max_message_size,
        )
        self.hooks.on_frame = catchup.note_frame
        await self.start(listen=False, mesh=False)
        await catchup.fetch(timeout, replace=replace)

    # ------------------------------------------------------------ inside

    async def _listen(self) -> None:
        config = self.config
        self.listener = WebSocketListener(
            config.listen_host,
            config.listen_port,
            links=self.links,
            run_link=self.driver.run,
            serve_api=lambda ws: serve_api(ws, self.api, self.limits.idle_timeout),
            max_message_size=self.limits.max_message_size,
            ssl=server_ssl_context(config.tls_cert, config.tls_key),
        )
        try:
            port = await self.listener.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            address = f"{config.listen_host}:{config.listen_port}"
            raise ClusterError(
                f"address already in use: another crdtmds (or another program) listens on "
                f"{address}; stop it, or choose another port with start --listen HOST:PORT"
            ) from None
        url = advertised_url(config.url, config.listen_host, port, tls=bool(config.tls_cert))
        if (port, url) != (config.listen_port, config.url):
            config.listen_port, config.url = port, url
            await self.storage.set_meta(CONFIG_KEY, config.to_meta())
        log.info("listening on %s (%s:%d)", url, config.listen_host, port)

    async def _listen_web_api(self) -> None:
        """The HTTPS Web API door, when the configuration names an address for it."""
        config = self.config
        if not config.web_api_host:
            return
        cert, key = web_api_tls_files(config, self.data_dir)
        context = server_ssl_context(cert, key)
        assert context is not None, "both files are named"
        self.web_listener = _web_api_listener(self, context)
        url = await self.web_listener.start()
        port = self.web_listener.port
        if (port, url) != (config.web_api_port, config.web_api_url):
            config.web_api_port, config.web_api_url = port, url
            await self.storage.set_meta(CONFIG_KEY, config.to_meta())
        fingerprints = certificate_fingerprints(cert)
        self.status.web_api = {
            "url": url,
            "fingerprint-sha1": fingerprints["sha1"],
            "fingerprint-sha256": fingerprints["sha256"],
        }
        log.info("Web API on %s (certificate SHA-1 %s)", url, fingerprints["sha1"])

    def _offer_to_peers(self, document_id: str) -> None:
        """A change made here is persisted: the hub offers it, the senders wake."""
        self.hub.document_changed(document_id)
        self.links.wake_all()

    def _stop_if_removed(self) -> None:
        """This server's id was tombstoned (delete-server on another server): stop."""
        if self.running and self.documents.cluster.is_removed(self.config.server_id):
            log.critical("%s; stopping", _removed_message(self.config))
            if self.fatal is None:
                self.fatal = ClusterError(_removed_message(self.config))
            self.request_stop()

    def _fail_fatally(self, exc: BaseException) -> None:
        log.critical("storage failed; stopping the server: %s", exc)
        if self.fatal is None:
            self.fatal = exc
        self.request_stop()


def _web_api_listener(server: Server, context: ssl.SSLContext) -> HttpsListener:
    """The HTTPS listener of the Web API door and, beside it, the console."""
    config, limits = server.config, server.limits
    console = ConsoleDoor(server.documents, server.logins, server.live_events)
    door = WebApiDoor(
        server.api,
        max_body=limits.max_message_size,
        timeout=limits.web_api_timeout,
        url=lambda: config.web_api_url,
        routes=console.routes(),
    )
    return HttpsListener(
        door, config.web_api_host, config.web_api_port, ssl=context,
        timeout=limits.web_api_timeout,
    )  # fmt: skip


def web_api_tls_files(config: ServerConfig, data_dir: Path) -> tuple[str, str]:
    """The certificate and key of the Web API door: the server's own (`--tls-cert`), or
    the self-signed pair of the data directory, made the first time it is needed and
    reused ever after (so that a client's pinned fingerprint stays valid)."""
    if config.tls_cert and config.tls_key:
        return config.tls_cert, config.tls_key
    cert, key = data_dir / WEB_API_CERT_FILE, data_dir / WEB_API_KEY_FILE
    if cert.exists() != key.exists():
        present = cert if cert.exists() else key
        raise ClusterError(
            f"{present} is there without its pair; remove it to have a new certificate made"
        )
    if not cert.exists():
        host = config.web_api_host or config.listen_host
        hosts = [socket.getfqdn() if host in ("", "0.0.0.0", "::") else host]
        make_self_signed(cert, key, hosts)
        log.info("made a self-signed Web API certificate: %s", cert)
    return str(cert), str(key)


def _domain_registry(
    config: ServerConfig, limits: Limits, storage: Storage
) -> tuple[DocumentReader, Documents, HeadsBook]:
    """The domains of a server, loaded on first use from storage, and their heads."""
    reader = DocumentReader(storage.path)
    residency = Residency(ResidencyLimits.of(limits))
    documents = Documents(config.cluster_document_id, loader=reader.load, residency=residency)
    return reader, documents, HeadsBook(documents, storage, residency.is_busy)


async def _load_catalogue(server: Server) -> None:
    """Load the cluster document and the catalogue of stored domains; a domain is loaded
    on first use. A cluster document that does not load stops the start."""
    cluster_id = server.config.cluster_document_id
    try:
        cluster = await server.storage.load_document(cluster_id)
    except StorageCorruption as exc:
        raise _damaged_store_error(server.data_dir, _problems_of(cluster_id, exc)) from exc
    server.persister.track_loaded([cluster_id])
    catalogue = await server.storage.heads.catalogue()
    server.documents.cluster = ClusterDocument(cluster_id, cluster or Document())
    await server.heads.load()
    server.documents.take_catalogue(server.documents.cluster.doc, catalogue)


def _pin_busy_domains(
    documents: Documents, sessions: Sessions, hub: Gossip, persister: Persister
) -> None:
    """A domain stays loaded while a session is open on it, its changes wait to be stored,
    or a sync with it is in flight; a loaded one is tracked for compaction."""
    residency = documents.residency
    residency.pin_while(
        lambda doc_id: any(s.domain.document_id == doc_id for s in sessions.by_uid.values())
    )
    residency.pin_while(hub.is_held)
    residency.pin_while(hub.is_syncing)
    documents.on_loaded(lambda doc_id: persister.track_loaded([doc_id]))


def _problems_of(document_id: str, exc: StorageCorruption) -> list[LoadProblem]:
    return [
        LoadProblem(document_id, p["table"], p["row_id"], p["message"])
        for p in exc.details.get("problems", [])
    ]


def _removed_message(config: ServerConfig) -> str:
    return (
        f"server {config.name!r} (id {config.server_id}) was removed from the cluster; "
        "to bring it back, wipe its data directory and join again"
    )


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
