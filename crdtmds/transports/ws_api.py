"""The `/api` door: JSON text frames over a WebSocket, onto the command layer.

One request is `{"id", "command", "params", "sid"?}` and its reply is `{"id", "result"}` or
`{"id", "error": {"code", "message", "details"}}`. A connection remembers the login made
on it, used by requests that carry no `sid`::

    connection = JsonConnection(api, "192.0.2.7:51234")
    reply = await connection.handle_text('{"id": 1, "command": "login", "params": {...}}')
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from crdtmds.api.call import Caller, InvalidSyntax
from crdtmds.api.dispatch import AdminAPI
from crdtmds.app.logins import host_of
from crdtmds.errors import CrdtmdsError
from crdtmds.net.urls import format_address

log = logging.getLogger("crdtmds.api")

API_PATH = "/api"


class JsonConnection:
    """One client connection: feed it each text frame, send back what it returns."""

    def __init__(self, api: AdminAPI, source: str) -> None:
        self.api = api
        self.caller = Caller(host_of(source))
        """Failed logins are counted per host, not per port."""

    async def handle_text(self, text: str | bytes) -> str:
        """The JSON reply to one JSON request. Never raises: every failure is a reply."""
        request_id: Any = None
        command: Any = None
        try:
            request = _decode_request(text)
            request_id, command = request.get("id"), request.get("command")
            result = await self.api.execute(self.caller, request)
            # ASCII escapes keep any echoed text (even a lone surrogate) encodable as UTF-8.
            return json.dumps({"id": request_id, "result": result})
        except CrdtmdsError as exc:
            reply = {"id": request_id, "error": exc.to_reply()}
        except Exception:
            log.exception("internal error running %r", command if isinstance(command, str) else "?")
            reply = {
                "id": request_id,
                "error": {
                    "code": "generic_internal_error",
                    "message": "internal error; the server log has the details",
                    "details": {},
                },
            }
        try:
            return json.dumps(reply)
        except (TypeError, ValueError):
            return json.dumps({"id": None, "error": reply["error"]})

    async def close(self) -> None:
        """The connection is gone. Its login stays valid (by `sid`) until logout or timeout."""
        self.caller.sid = None


async def serve_api(ws: ServerConnection, api: AdminAPI, idle_timeout: float) -> None:
    """Answer the text frames of one `/api` WebSocket until it closes or idles."""
    connection = JsonConnection(api, format_address(ws.remote_address))
    try:
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), idle_timeout)
            except TimeoutError:
                await ws.close(CloseCode.NORMAL_CLOSURE, f"idle for {idle_timeout:g} s")
                return
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            await ws.send(await connection.handle_text(text))
    except ConnectionClosed:
        pass
    finally:
        await connection.close()


def _decode_request(text: str | bytes) -> dict[str, Any]:
    try:
        request = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSyntax(f"the request is not valid JSON: {exc}") from None
    except RecursionError:  # the json module parses nested arrays and objects recursively
        raise InvalidSyntax("the request nests arrays or objects too deeply") from None
    if not isinstance(request, dict):
        raise InvalidSyntax("a request must be a JSON object")
    return request
