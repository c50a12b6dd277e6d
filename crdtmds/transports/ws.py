"""The WebSocket listener of a server: `/sync` links go to the network side (the link
driver), `/api` connections to the JSON door; anything else is answered HTTP 404."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.server import ServerProtocol

from crdtmds.errors import too_large_message
from crdtmds.net.link_driver import CLOSE_TIMEOUT
from crdtmds.net.links import Links, SyncLink
from crdtmds.net.urls import SYNC_PATH
from crdtmds.transports.ws_api import API_PATH

log = logging.getLogger("crdtmds.transports")

SyncHandler = Callable[[SyncLink], Coroutine[Any, Any, None]]
ApiHandler = Callable[[ServerConnection], Coroutine[Any, Any, None]]


class WebSocketListener:
    """Where a server listens for WebSockets: `start` binds, `stop` closes."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        links: Links,
        run_link: SyncHandler,
        serve_api: ApiHandler,
        max_message_size: int,
        ssl: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self.links = links
        self.run_link = run_link
        self.serve_api = serve_api
        self.max_message_size = max_message_size
        self.ssl = ssl
        self._server: Server | None = None

    async def start(self) -> int:
        """Bind (port 0 picks a free port) and return the port bound."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=_route,
            create_connection=_ListenerConnection,
            max_size=self.max_message_size,
            ssl=self.ssl,
            compression=None,
            close_timeout=CLOSE_TIMEOUT,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await _wait_closed(self._server)
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None, "the handler runs after the opening handshake"
        parts = urlsplit(ws.request.path)
        if parts.path == API_PATH:
            await self.serve_api(ws)
            return
        link = SyncLink(self.links.next_conn_id("in"), ws, outgoing=False)
        link.query = dict(parse_qsl(parts.query))
        await self.run_link(link)


async def _wait_closed(server: Server) -> None:
    await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT * 2)


def _route(connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
    path = urlsplit(request.path).path
    if path in (SYNC_PATH, API_PATH):
        return None
    return connection.respond(
        HTTPStatus.NOT_FOUND, f"nothing at {path}; endpoints: {SYNC_PATH}, {API_PATH}\n"
    )


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
