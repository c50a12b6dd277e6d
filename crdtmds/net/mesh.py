"""The mesh of dialers: one per server URL this server keeps a link to.

Every server of the cluster document is dialed in a full mesh (at the URL it advertises
there, or at one given for it, `dial_urls`: a tunnel, a proxy, an address of its own
region); besides them, or alone without the mesh, the configured peers. A dialer redials
with capped exponential backoff and jitter. When two servers dial each other, the one
with the larger name drops its own outgoing link once the other is warm (see
`_drop_duplicate_links`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode

from crdtmds.app.documents import Documents
from crdtmds.config import Limits, ServerConfig
from crdtmds.net.link_driver import CLOSE_TIMEOUT, LinkDriver
from crdtmds.net.links import Links, SyncLink
from crdtmds.net.urls import SYNC_PATH, dialable, endpoint, normalise_url
from crdtmds.sync.gossip import Gossip
from crdtmds.tls import ssl_for_url

log = logging.getLogger("crdtmds.net")

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
OPEN_TIMEOUT = 10.0
DUPLICATE_LINK_PAUSE = 0.5
DUPLICATE_LINK_GRACE = 2.0
"""Longest a replaced link to a server keeps running beside the new one, in seconds."""
DUPLICATE_LINK_POLL = 0.02


class Mesh:
    """The dialers of one server."""

    def __init__(
        self,
        config: ServerConfig,
        limits: Limits,
        documents: Documents,
        hub: Gossip,
        links: Links,
        driver: LinkDriver,
    ) -> None:
        self.config = config
        self.limits = limits
        self.documents = documents
        self.hub = hub
        self.links = links
        self.driver = driver
        self.running = False
        self.full = True
        """Whether every server of the cluster document is dialed."""
        self.extra_peers: list[str] = []
        self.dial_urls: dict[str, str] = {}
        """Server name -> the URL to dial it at instead of the one it advertises."""
        self.dialers: dict[str, asyncio.Task[None]] = {}
        self.retired: set[asyncio.Task[None]] = set()
        self.url_names: dict[str, str] = {}
        """Server names learned per dialed URL (from the cluster document or a handshake)."""

    def start(
        self, *, full: bool, peers: Iterable[str] = (), dial_urls: Mapping[str, str] | None = None
    ) -> None:
        self.running = True
        self.full = full
        self.extra_peers = [normalise_url(url) for url in peers]
        self.dial_urls = {name: normalise_url(url) for name, url in (dial_urls or {}).items()}
        self.refresh()

    async def stop(self) -> None:
        """Close the links we dialed, and stop every dialer."""
        self.running = False
        outgoing = [link.ws for link in self.links.by_id.values() if link.outgoing]
        await asyncio.gather(
            *(ws.close(CloseCode.GOING_AWAY) for ws in outgoing), return_exceptions=True
        )
        dialers = [*self.dialers.values(), *self.retired]
        for task in dialers:
            task.cancel()
        await asyncio.gather(*dialers, return_exceptions=True)
        self.dialers.clear()

    def refresh(self) -> None:
        """One dialer per URL to dial; dialers of URLs no longer listed stop. Call when the
        cluster document changed."""
        if not self.running:
            return
        self._close_removed()
        wanted = self._targets()
        for url in list(self.dialers):
            if url not in wanted:
                task = self.dialers.pop(url)
                task.cancel()
                self.retired.add(task)
                task.add_done_callback(self.retired.discard)
        for url, name in self._mesh_urls().items():
            self.url_names.setdefault(url, name)
        for url in sorted(wanted - self.dialers.keys()):
            self.dialers[url] = asyncio.create_task(self._dial_forever(url), name=f"dial {url}")

    def on_peer_connected(self, link: SyncLink) -> None:
        """A server's link is admitted: remember its name, and drop a duplicate link."""
        name = str(link.peer_name)
        if link.outgoing:
            self.url_names[link.target] = name
        self._drop_duplicate_links(name)

    # ------------------------------------------------------------ inside

    def _targets(self) -> set[str]:
        config = self.config
        # A configured peer (the server a join went through) that is dialed elsewhere
        # is dialed there too.
        rerouted = {
            normalise_url(entry["url"]): self.dial_urls[name]
            for name, entry in self.documents.cluster.servers().items()
            if name in self.dial_urls and isinstance(entry.get("url"), str)
        }
        peers = [normalise_url(url) for url in config.peers]
        targets = {rerouted.get(url, url) for url in peers} | set(self.extra_peers)
        targets |= self._mesh_urls().keys()
        targets.discard(normalise_url(config.url))
        return {url for url in targets if dialable(url)}

    def _mesh_urls(self) -> dict[str, str]:
        """URL to dial -> name, of every other server of the cluster document, in a full
        mesh."""
        if not self.full:
            return {}
        urls = {}
        for name, entry in self.documents.cluster.servers().items():
            url = self.dial_urls.get(name, entry.get("url"))
            if name != self.config.name and isinstance(url, str):
                urls[normalise_url(url)] = name
        return urls

    def _close_removed(self) -> None:
        """Close the links of servers removed from the cluster since they were admitted."""
        cluster = self.documents.cluster
        for link in list(self.links.by_id.values()):
            peer = self.hub.peer(link.conn_id)
            if peer is None or link.closing or not peer.is_server:
                continue
            if cluster.is_removed(peer.metadata.get("server-id")):
                link.closing = True
                log.warning("closing the link of removed %s", link.describe())
                self.links.spawn(link.ws.close(CloseCode.POLICY_VIOLATION, "server removed"))

    def _drop_duplicate_links(self, name: str) -> None:
        """When two servers dial each other, the one with the larger name closes its own
        outgoing link (and its dialer waits while the incoming one lives). Only the dialer
        closes, so a new link is never refused because an old one only looks alive; and
        nothing is lost, since every link syncs everything.

        It closes once the new link has heard from the peer about every document (at
        most `DUPLICATE_LINK_GRACE` seconds later): until then, changes sent on the new
        link would wait a round trip, so the old one carries them."""
        if self.config.name > name:
            self.links.spawn(self._close_duplicate_outgoing(name))

    async def _close_duplicate_outgoing(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DUPLICATE_LINK_GRACE
        while True:
            incoming = [link for link in self.links.server_links(name) if not link.outgoing]
            if not incoming:
                return  # no link from that server (any more): nothing to close
            if loop.time() >= deadline or any(self.hub.is_warm(link.conn_id) for link in incoming):
                break
            await asyncio.sleep(DUPLICATE_LINK_POLL)
        for link in self.links.server_links(name):
            if link.outgoing and not link.closing:
                link.closing = True
                log.info("closing duplicate link %s", link.describe())
                self.links.spawn(link.ws.close(CloseCode.NORMAL_CLOSURE, "duplicate link"))

    def _served_by_incoming(self, url: str) -> bool:
        """Whether the server at `url` (one with a smaller name) already dialed us."""
        name = self.url_names.get(url)
        if name is None or self.config.name < name:
            return False
        return any(not link.outgoing for link in self.links.server_links(name))

    async def _dial_forever(self, url: str) -> None:
        """Keep one link to `url`, redialing with capped exponential backoff."""
        delay = BACKOFF_INITIAL
        reported = False
        while self.running:
            if self._served_by_incoming(url):
                await asyncio.sleep(DUPLICATE_LINK_PAUSE)
                continue
            link: SyncLink | None = None
            try:
                async with self._connect(url) as ws:
                    link = SyncLink(self.links.next_conn_id("out"), ws, outgoing=True, target=url)
                    await self.driver.run(link)
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

    def _connect(self, url: str) -> connect:
        return connect(
            endpoint(url, SYNC_PATH),
            ssl=ssl_for_url(url, self.config.tls_cert),
            max_size=self.limits.max_message_size,
            compression=None,
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
        )
