"""TCP proxies on loopback that delay every byte by a fixed time in each direction, to
put servers of different regions far apart, and that can be cut to partition them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass, field

CALL_TIMEOUT = 10.0
CHUNK = 64 * 1024


@dataclass(eq=False, slots=True)
class ProxyLink:
    """One listening port forwarding to 127.0.0.1:`target_port` with a one-way delay."""

    delay: float
    port: int = 0
    target_port: int = 0
    """Settable at any time: the target of connections accepted from then on."""
    open: bool = True
    """False while cut: connections are dropped and new ones refused."""
    connections_accepted: int = 0
    transports: set[asyncio.BaseTransport] = field(default_factory=set)
    """Both sockets of every connection it forwards."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class DelayProxies:
    """TCP proxies on 127.0.0.1 that hold every chunk for a fixed delay in each direction.

    They run on their own event loop in a background thread, so the caller's own loop
    does not slow them down. Order is kept and bandwidth is not limited: the delay is a
    pure one-way latency, like a long link. A connection accepted before its target is
    known, or while its link is cut, is refused (closed), and the server dialing it
    retries. `cut` drops a link's connections at once, bytes in flight included, as a
    failed route would (without the wait for a timeout that a silent one costs).
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self._links: list[ProxyLink] = []

    def start(self) -> DelayProxies:
        self._thread.start()
        return self

    def add(self, delay: float) -> ProxyLink:
        link = ProxyLink(delay)
        asyncio.run_coroutine_threadsafe(self._listen(link), self._loop).result(CALL_TIMEOUT)
        return link

    def cut(self, links: list[ProxyLink]) -> None:
        """Drop every connection of `links` and refuse new ones until `heal`."""
        asyncio.run_coroutine_threadsafe(self._cut(links), self._loop).result(CALL_TIMEOUT)

    def heal(self, links: list[ProxyLink]) -> None:
        """Forward new connections of `links` again."""
        for link in links:
            link.open = True

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(CALL_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self._loop.close()

    async def _listen(self, link: ProxyLink) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._forward(link, reader, writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        link.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)
        self._links.append(link)

    async def _forward(
        self, link: ProxyLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        link.connections_accepted += 1
        if not link.target_port or not link.open:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", link.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        if not link.open:  # cut while connecting
            for w in (writer, upstream_writer):
                w.transport.abort()
            return
        for w in (writer, upstream_writer):
            _set_nodelay(w)
            link.transports.add(w.transport)
        try:
            await asyncio.gather(
                _delayed_pump(reader, upstream_writer, link.delay),
                _delayed_pump(upstream_reader, writer, link.delay),
            )
        finally:
            for w in (writer, upstream_writer):
                link.transports.discard(w.transport)
                w.transport.abort()

    async def _cut(self, links: list[ProxyLink]) -> None:
        for link in links:
            link.open = False
            for transport in list(link.transports):
                transport.abort()
            link.transports.clear()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        await self._cut(self._links)


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _delayed_pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy bytes, each chunk written `delay` seconds after it was read, until EOF."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time(), b""))
        await delivering
    except (ConnectionError, OSError):
        pass
    finally:
        delivering.cancel()
        writer.transport.abort()
