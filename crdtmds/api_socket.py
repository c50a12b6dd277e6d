"""The JSON-over-WebSocket connection of a client to one server's `/api`: one request
out, its reply back, and what can go wrong on the way (`ApiError` for an error reply,
`RequestTooLarge` for a request over the frame limit, `TransportFailure` for a lost
connection). The failover client (`crdtmds.client`) decides what to do about each.

Slow is not lost. A connection that is closed, reset or refused is lost at once. A reply
that has not come yet on a connection that is still open is waited for: `on_wait` hears
about it every `progress_interval` seconds, and only after `reply_timeout` seconds of
silence is the server given up as lost. No keepalive pings: a server busy with a long
publish or revert answers no ping either, and that must not read as a loss."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode

from crdtmds.errors import CrdtmdsError, too_large_message

log = logging.getLogger("crdtmds.client")

API_PATH = "/api"
MAX_REPLY_SIZE = 256 * 1024 * 1024
MAX_REQUEST_SIZE = 16 * 1024 * 1024
"""The servers' default frame limit (`crdtmds start --max-message-size`)."""
REPLY_TIMEOUT = 600.0
"""How long a reply is waited for on a connection that stays open."""
PROGRESS_INTERVAL = 5.0

WaitListener = Callable[[str, str, float], None]
"""Told `(url, command, seconds waited)` while a reply is slow."""


class ApiError(CrdtmdsError):
    """An error reply of the server, or a failure of the client to reach one."""

    code = "generic_error"

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.code = code

    @classmethod
    def from_reply(cls, error: Any) -> ApiError:
        if not isinstance(error, dict):
            return cls("generic_error", f"malformed error reply: {error!r}")
        details = error.get("details")
        return cls(
            str(error.get("code", "generic_error")),
            str(error.get("message", "")),
            details=details if isinstance(details, dict) else {},
        )


class RequestTooLarge(ApiError):
    """The request exceeds the frame limit: refused before sending, or by the server's
    close (code 1009). The server is fine, so the client does not fail over."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__("err_request_too_large", message, details=details)


class TransportFailure(Exception):
    """The connection failed; `sent` tells whether the request may have reached the server."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


def api_url(url: str) -> str:
    """The `/api` WebSocket URL of a server given as `ws://host:port` (or http, or /api)."""
    parts = urlsplit(url.strip())
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a server URL: {url!r} (expected ws://host:port)")
    path = parts.path if parts.path not in ("", "/") else API_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class ApiSocket:
    """One WebSocket to the `/api` of the server at `url`, opened when first needed."""

    def __init__(
        self,
        *,
        timeout: float,
        max_request_size: int = MAX_REQUEST_SIZE,
        reply_timeout: float = REPLY_TIMEOUT,
        on_wait: WaitListener | None = None,
    ) -> None:
        self.timeout = timeout
        """Seconds to connect, and at most between two `on_wait` calls."""
        self.reply_timeout = max(reply_timeout, timeout)
        self.on_wait = on_wait
        self.max_request_size = max_request_size
        self._url: str | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)

    async def request(
        self, url: str, command: str, params: dict[str, Any], sid: str | None
    ) -> dict[str, Any]:
        """The result of `command` on the server at `url` (the socket moves there)."""
        ws = await self._connection(url)
        request_id = next(self._ids)
        request: dict[str, Any] = {"id": request_id, "command": command, "params": params}
        if sid is not None and command != "login":
            request["sid"] = sid
        text = json.dumps(request)
        self._check_size(command, len(text.encode()))
        try:
            await ws.send(text)
        except (ConnectionClosed, OSError) as exc:
            await self.close()
            _raise_if_too_large(command, exc)
            raise TransportFailure(f"send failed: {exc}", sent=False) from None
        try:
            reply = await self._await_reply(ws, url, command, request_id)
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            await self.close()
            _raise_if_too_large(command, exc)
            reason = (
                f"no reply within {self.reply_timeout:g} s on an open connection"
                if isinstance(exc, TimeoutError)
                else f"connection lost ({exc})"
            )
            raise TransportFailure(f"'{command}': {reason}", sent=True) from None
        if "error" in reply:
            raise ApiError.from_reply(reply["error"])
        result = reply.get("result")
        return result if isinstance(result, dict) else {"result": result}

    async def _await_reply(
        self, ws: ClientConnection, url: str, command: str, request_id: int
    ) -> dict[str, Any]:
        """The reply, however slow, while the connection stays open (up to
        `reply_timeout`); `on_wait` hears of the wait every `progress_interval` s."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        step = min(self.timeout, PROGRESS_INTERVAL)
        reply = asyncio.ensure_future(_reply_to(ws, request_id))
        try:
            while True:
                remaining = self.reply_timeout - (loop.time() - started)
                if remaining <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({reply}, timeout=min(step, remaining))
                if done:
                    return reply.result()
                if self.on_wait is not None and loop.time() - started < self.reply_timeout:
                    self.on_wait(url, command, loop.time() - started)
        finally:
            reply.cancel()

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(OSError, ConnectionClosed, TimeoutError):
                await ws.close()

    def _check_size(self, command: str, size: int) -> None:
        if size > self.max_request_size:
            raise RequestTooLarge(
                too_large_message("request", self.max_request_size),
                details={"command": command, "size": size, "limit": self.max_request_size},
            )

    async def _connection(self, url: str) -> ClientConnection:
        if self._ws is not None and self._url == url:
            return self._ws
        await self.close()
        try:
            self._ws = await connect(
                url,
                open_timeout=self.timeout,
                close_timeout=1,
                max_size=MAX_REPLY_SIZE,
                proxy=None,
                ping_interval=None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TransportFailure(f"cannot connect to {url}: {exc}", sent=False) from None
        except InvalidURI as exc:
            raise ApiError("generic_err_invalid_parameter", str(exc)) from None
        self._url = url
        return self._ws


async def _reply_to(ws: ClientConnection, request_id: int) -> dict[str, Any]:
    while True:
        message = await ws.recv()
        try:
            reply = json.loads(message)
        except ValueError:
            log.warning("ignoring a reply that is not JSON")
            continue
        if isinstance(reply, dict) and reply.get("id") == request_id:
            return reply


def _raise_if_too_large(command: str, exc: BaseException) -> None:
    """A close with code 1009 means the server refused the request's size, not that it
    went away: raise `RequestTooLarge` with its reason instead of failing over."""
    close = exc.rcvd if isinstance(exc, ConnectionClosed) else None
    if close is not None and close.code == CloseCode.MESSAGE_TOO_BIG:
        raise RequestTooLarge(
            close.reason or "request too large",
            details={"command": command, "close-code": close.code},
        )
