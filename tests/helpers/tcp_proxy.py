"""A fault-injecting TCP proxy on 127.0.0.1 for partition tests.

The proxy runs its own event loop in a background thread, so it keeps forwarding while a
test blocks (starting processes, waiting on subprocesses). `cut()` drops every forwarded
connection and refuses new ones (accepted, then closed at once) until `heal()`::

    with TcpProxy("127.0.0.1", target_port) as proxy:
        dial(proxy.url)
        proxy.cut()
        ...
        proxy.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any

CHUNK = 64 * 1024
START_TIMEOUT = 5.0


class TcpProxy:
    """Forwards 127.0.0.1:`port` (chosen by the OS) to `target_host`:`target_port`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.connections_accepted = 0
        self._open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen()).result(START_TIMEOUT)
        return self

    def cut(self) -> None:
        """Drop every forwarded connection and refuse new ones."""
        self._call(self._cut()).result(START_TIMEOUT)

    def heal(self) -> None:
        """Forward new connections again."""
        self._call(self._heal()).result(START_TIMEOUT)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown()).result(START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._loop.close()

    # ---------------------------------------------------------------- in the proxy's loop

    def _call(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        self._open = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _heal(self) -> None:
        self._open = True

    async def _shutdown(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        if not self._open:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, upstream_writer}
        self._writers |= pair
        try:
            await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
        finally:
            for w in pair:
                self._writers.discard(w)
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until either side closes; then close both directions."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
