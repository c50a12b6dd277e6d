"""The command layer of an in-process server, as tests drive it: with a throttle and a
clock of the test's choosing, through the JSON door of `/api`.

`PASSWORDS` are those of the administrators of the `node` fixture (tests/integration/
conftest.py); `connect` opens an `Admin`, one JSON connection and its login.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from crdtmds.api.dispatch import AdminAPI
from crdtmds.core import auth
from crdtmds.server import Server
from crdtmds.transports.ws_api import JsonConnection

PASSWORDS = {
    "root": "root-password", "alice": "alice-password", "reader": "reader-password",
    "bob": "bob-password",
}  # fmt: skip


def admin_api(
    server: Server,
    *,
    throttle: auth.LoginThrottle | None = None,
    clock: Callable[[], float] | None = None,
) -> AdminAPI:
    """The server's command layer, its logins throttled and timed as given."""
    if throttle is not None:
        server.logins.throttle = throttle
    if clock is not None:
        server.logins.clock = clock
    return server.api


class Admin:
    """One connection and its login, with helpers that parse replies."""

    def __init__(self, connection: JsonConnection) -> None:
        self.connection = connection
        self.sid: str | None = None

    async def send(self, command: str, params: Any = None, **extra: Any) -> dict[str, Any]:
        request = {"id": 7, "command": command, "params": params or {}, **extra}
        reply = json.loads(await self.connection.handle_text(json.dumps(request)))
        assert reply["id"] == 7
        return reply

    async def ok(self, command: str, **params: Any) -> dict[str, Any]:
        reply = await self.send(command, params)
        assert "error" not in reply, reply
        return reply["result"]

    async def error(self, command: str, **params: Any) -> str:
        reply = await self.send(command, params)
        assert "result" not in reply, reply
        assert set(reply["error"]) == {"code", "message", "details"}
        assert reply["error"]["message"]
        return reply["error"]["code"]

    async def login(self, user: str, domain: str | None = "acme", **params: Any) -> dict:
        params = {"user": user, "password": PASSWORDS[user], **params}
        if domain is not None:
            params["domain"] = domain
        result = await self.ok("login", **params)
        self.sid = result["sid"]
        return result


def host(name: str, address: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "ipv4-address": address, **more}


def connect(api: AdminAPI, source: str = "192.0.2.1:40000") -> Admin:
    return Admin(JsonConnection(api, source))
