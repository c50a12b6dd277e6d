"""The Web API door: Check Point's Management Web API over HTTPS, onto the command layer.

`POST /web_api/{command}` and `POST /web_api/v{version}/{command}` carry the command's
parameters as a JSON object; the login is named by the `X-chkp-sid` header. A success is
`200 OK` with the command's result; a failure is a JSON object with `code` and `message`
and the HTTP status of `STATUS_BY_CODE` (docs/web-api.md has the wire contract)::

    door = WebApiDoor(api, max_body=16 << 20, timeout=30.0)
    listener = HttpsListener(door, "0.0.0.0", 443, ssl=context, timeout=30.0)
    url = await listener.start()      # https://host:443
    ...
    await listener.stop()

What is served (`WebApiDoor`, an aiohttp `Application`) is kept apart from where it
listens (`HttpsListener`), which runs aiohttp inside the server's event loop. The usual
request, a POST of a command, skips the application's router (`WebApiDoor.shortcut`): a
small command costs about as much in routing as in running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from crdtmds.api.call import Caller
from crdtmds.api.dispatch import AdminAPI
from crdtmds.app.logins import host_of
from crdtmds.errors import CrdtmdsError, size_text
from crdtmds.net.urls import format_address, url_host

log = logging.getLogger("crdtmds.web_api")

SID_HEADER = "X-chkp-sid"
WEB_API_PATH = "/web_api"

INVALID_SYNTAX = "generic_err_invalid_syntax"
INTERNAL_ERROR = "generic_internal_error"
TOO_LARGE = "err_request_too_large"
TIMED_OUT = "err_request_timeout"
NOT_FOUND_PATH = "generic_err_command_not_found"

STATUS_BY_CODE: dict[str, int] = {
    "err_login_failed": 400,
    "generic_err_invalid_parameter_name": 400,
    "generic_err_invalid_parameter": 400,
    "generic_err_missing_required_parameters": 400,
    "err_validation_failed": 400,
    "err_name_in_use": 400,
    INVALID_SYNTAX: 400,
    "err_publish_failed": 400,
    "err_protocol": 400,
    "err_cluster": 400,
    "generic_err_missing_session_id": 401,
    "generic_err_wrong_session_id": 401,
    "generic_err_session_expired": 401,
    "err_insufficient_permissions": 403,
    "generic_err_no_permissions": 403,
    "err_forbidden": 403,
    "generic_err_object_not_found": 404,
    "generic_err_command_not_found": 404,
    "generic_err_method_not_allowed": 405,
    TIMED_OUT: 408,
    "err_object_in_use": 409,
    "generic_err_object_locked": 409,
    TOO_LARGE: 413,
    "err_too_many_requests": 429,
    INTERNAL_ERROR: 500,
    "generic_error": 500,
    "err_storage": 500,
    "err_storage_corrupt": 500,
    "err_storage_version": 500,
    "not_implemented": 501,
}
"""The HTTP status of each error code; a code not listed (a new one of the command layer)
is a client's mistake: 400."""

LINGER = 2.0
"""Seconds the rest of a refused request body is read and dropped before the connection
closes (so that the client reads the reply rather than a reset)."""

MESSAGE_LISTS = ("errors", "warnings", "blocking-errors")
"""Error details passed on to the client, as lists of objects with a string `message`."""


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

JSON_TYPE = "application/json"


def status_of(code: str) -> int:
    return STATUS_BY_CODE.get(code, 400)


def json_reply(status: int, body: Mapping[str, Any], **headers: str) -> web.Response:
    """A JSON object reply; the reason phrase is the standard one (`200 OK`)."""
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=JSON_TYPE,
        headers=headers or None,
    )


def error_reply(code: str, message: str, details: Mapping[str, Any] | None = None) -> web.Response:
    """The reply to a failure: `code`, `message`, and any message lists of the details."""
    body: dict[str, Any] = {"code": code, "message": message}
    for key in MESSAGE_LISTS:
        items = (details or {}).get(key)
        if isinstance(items, list) and items:
            body[key] = [_message_object(item) for item in items]
    headers: dict[str, str] = {}
    retry_after = (details or {}).get("retry-after")
    if code == "err_too_many_requests" and isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return json_reply(status_of(code), body, **headers)


def _message_object(item: Any) -> dict[str, Any]:
    if isinstance(item, dict) and isinstance(item.get("message"), str):
        return item
    if isinstance(item, dict):
        return {**item, "message": str(item.get("message", ""))}
    return {"message": str(item)}


class _Refused(Exception):
    """A request the door refuses before the command layer sees it."""

    def __init__(self, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close

    def reply(self) -> web.Response:
        response = error_reply(self.code, self.message)
        if self.close:
            response.force_close()
        return response


class WebApiDoor:
    """What the Web API serves: an aiohttp `Application` turning each POST into one
    `AdminAPI.execute` call. `url()` names the door in login replies; `routes` are
    served besides the commands (the console's pages, `transports/console.py`)."""

    def __init__(
        self,
        api: AdminAPI,
        *,
        max_body: int,
        timeout: float,
        url: Callable[[], str] = lambda: "",
        routes: Iterable[web.RouteDef] = (),
    ) -> None:
        self.api = api
        self.max_body = max_body
        self.timeout = timeout
        self.url = url
        self.app = web.Application(client_max_size=max_body)
        self.app.router.add_post(WEB_API_PATH + "/{command}", self.handle)
        self.app.router.add_post(WEB_API_PATH + "/v{version}/{command}", self.handle)
        self.app.router.add_routes(list(routes))  # other pages served alongside (the console)
        self.app.router.add_route("*", "/{tail:.*}", self.elsewhere)

    def shortcut(self, routed: Handler) -> Handler:
        """`routed` (the application's handling of a request) with a way around its
        router for a POST of a command that asks nothing special (no `Expect`)."""

        async def serve(request: web.BaseRequest) -> web.StreamResponse:
            command = _command_of(request)
            if command is None:
                return await routed(request)
            return await self.run(request, command)

        return serve

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A command the router found."""
        return await self.run(request, request.match_info["command"])

    async def run(self, request: web.BaseRequest, command: str) -> web.StreamResponse:
        """One command: the body's parameters, the header's login, the layer's result."""
        try:
            params = await self._params(request)
        except _Refused as refused:
            return refused.reply()
        sid = None if command == "login" else (request.headers.get(SID_HEADER) or None)
        caller = Caller(_caller_host(request), sid)
        try:
            result = await self.api.execute(caller, {"command": command, "params": params})
            if command == "login" and self.url():
                result = {**result, "url": self.url() + WEB_API_PATH}
            return json_reply(200, result)
        except CrdtmdsError as exc:
            return error_reply(exc.code, exc.message, exc.details)
        except Exception:
            log.exception("internal error running %r over the Web API", command)
            return error_reply(INTERNAL_ERROR, "internal error; the server log has the details")

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        """Any other path or method: a JSON refusal, never aiohttp's text pages."""
        path = request.path
        if request.method != "POST" and _is_command_path(path):
            response = error_reply(
                "generic_err_method_not_allowed", f"{request.method} is not served; use POST"
            )
            response.headers["Allow"] = "POST"
            return response
        return error_reply(
            NOT_FOUND_PATH, f"nothing at {path}; commands are POST {WEB_API_PATH}/COMMAND"
        )

    async def _params(self, request: web.BaseRequest) -> dict[str, Any]:
        length = request.content_length
        if length is not None and length > self.max_body:
            raise _Refused(TOO_LARGE, _too_large(self.max_body), close=True)
        body = await self._read_body(request)
        if not body.strip():
            return {}
        if request.content_type != JSON_TYPE:
            raise _Refused(
                INVALID_SYNTAX,
                f"the body must be application/json, not {request.content_type or 'untyped'}",
            )
        try:
            params = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Refused(INVALID_SYNTAX, f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise _Refused(INVALID_SYNTAX, "the body nests too deeply") from None
        if not isinstance(params, dict):
            raise _Refused(INVALID_SYNTAX, "the body must be a JSON object of parameters")
        return params

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        content = request.content
        try:
            if content.is_eof():  # the whole body is in: no wait to bound
                body = content.read_nowait()
                if len(body) > self.max_body:  # a chunked body, not refused by its length
                    raise web.HTTPRequestEntityTooLarge(self.max_body, len(body))
                return body
            async with asyncio.timeout(self.timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(TOO_LARGE, _too_large(self.max_body), close=True) from None
        except TimeoutError:
            log.info("dropped a Web API client that took over %g s to send", self.timeout)
            raise _Refused(
                TIMED_OUT, f"the request took over {self.timeout:g} s", close=True
            ) from None


def _too_large(limit: int) -> str:
    return f"request too large (limit {size_text(limit)})"


def _is_command_path(path: str) -> bool:
    parts = path.strip("/").split("/")
    return parts[0] == WEB_API_PATH.strip("/") and len(parts) in (2, 3)


def _command_of(request: web.BaseRequest) -> str | None:
    """The command a request may run without the router: a POST to
    `/web_api/COMMAND` or `/web_api/vVERSION/COMMAND` (the path as the router reads it)
    with no `Expect` header (which the router's expect handler answers); anything odd,
    a `%` left in the path included, is the router's."""
    if request.method != "POST" or "Expect" in request.headers:
        return None
    path = request.rel_url.path_safe
    if not path.startswith(WEB_API_PATH + "/") or "%" in path:
        return None
    parts = path[len(WEB_API_PATH) + 1 :].split("/")
    if len(parts) == 2 and len(parts[0]) > 1 and parts[0][0] == "v":
        parts = parts[1:]
    return parts[0] if len(parts) == 1 and parts[0] else None


def _caller_host(request: web.BaseRequest) -> str:
    protocol = request.protocol
    if isinstance(protocol, _Connection):
        return protocol.caller_host
    return host_of(_source(request.transport) or request.remote or "unknown")


def _source(transport: asyncio.BaseTransport | None) -> str | None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return format_address(peer) if peer else None


class _Connection(RequestHandler):
    """aiohttp's connection, whose replies to unparsable HTTP are JSON objects too, and
    which knows its client's host (failed logins are counted per host) once for all
    its requests."""

    caller_host = "unknown"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.caller_host = host_of(_source(transport) or "unknown")

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.debug("bad HTTP from %s: %s", request.remote, exc or message)
        if request.writer.output_size > 0:
            raise ConnectionError("a reply is sent already")
        if status >= 500:
            response = error_reply(INTERNAL_ERROR, "internal error")
        else:
            response = error_reply(INVALID_SYNTAX, f"malformed HTTP request: {message or status}")
            response.set_status(status if status in (400, 413, 431) else 400)
        response.force_close()
        return response


class HttpsListener:
    """Where the Web API listens: HTTPS (HTTP/1.1 only) on one address, with `timeout`
    for the TLS handshake, for each request and for idling between requests."""

    def __init__(
        self, door: WebApiDoor, host: str, port: int, *, ssl: ssl.SSLContext, timeout: float
    ) -> None:
        self.door = door
        self.host = host
        self.port = port
        self.ssl = ssl
        self.timeout = timeout
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Bind (port 0 picks a free port); returns `https://HOST:PORT` of the bound port."""
        self.ssl.set_alpn_protocols(["http/1.1"])
        runner = web.AppRunner(
            self.door.app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await runner.setup()
        self._runner = runner
        loop = asyncio.get_running_loop()
        manager = runner.server
        assert manager is not None, "set up above"
        manager.request_handler = self.door.shortcut(manager.request_handler)

        def connection() -> _Connection:
            return _Connection(
                manager,
                loop=loop,
                keepalive_timeout=self.timeout,
                lingering_time=min(self.timeout, LINGER),
                access_log=None,
            )

        self._server = await loop.create_server(
            connection,
            self.host or None,
            self.port,
            ssl=self.ssl,
            ssl_handshake_timeout=self.timeout,
            reuse_address=True,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        host = self.host if self.host not in ("", "0.0.0.0", "::") else socket.getfqdn()
        return f"https://{url_host(host)}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
