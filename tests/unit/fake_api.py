"""A scripted stand-in for a server's `/api` on 127.0.0.1, in a thread of its own: for
client behaviour that a real server cannot be made to show on cue (a reply that is slow
but comes, a connection that breaks between request and reply)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Handler = Callable[[ServerConnection, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Returns the result to send back (an error reply if it holds `ERROR`), or None to send
nothing."""
ERROR = "__error__"


async def default_reply(_ws: ServerConnection, request: dict[str, Any]) -> dict[str, Any]:
    command = request["command"]
    if command == "login":
        return {"sid": "sid-1", "uid": "session-1"}
    if command == "show-session":
        return {"uid": "session-1", "changes": 0}
    return {"message": "OK"}


class FakeApi:
    """`handlers[command]` answers that command; the rest get `default_reply`."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.seen: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self._handlers: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> FakeApi:
        self._thread.start()
        self._call(self._start()).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def stop(self) -> None:
        """Close every connection and refuse new ones."""
        if self._server is not None:
            self._call(self._stop()).result(5)

    def _call(self, coroutine: Awaitable[Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._server = await serve(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"

    async def _stop(self) -> None:
        server, self._server = self._server, None
        server.close()
        for task in self._handlers:
            task.cancel()  # a handler still sleeping on a slow reply
        await server.wait_closed()

    async def _serve(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            with contextlib.suppress(ConnectionClosed):
                await self._answer(ws)
        finally:
            self._handlers.discard(task)

    async def _answer(self, ws: ServerConnection) -> None:
        async for text in ws:
            request = json.loads(text)
            self.seen.append(request["command"])
            handler = self.handlers.get(request["command"], default_reply)
            result = await handler(ws, request)
            if result is None:
                continue
            reply = {"error": result[ERROR]} if ERROR in result else {"result": result}
            await ws.send(json.dumps({"id": request["id"], **reply}))
