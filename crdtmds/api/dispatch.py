"""`AdminAPI`: runs one request of any door against the command table.

A request is a dict: `{"command", "params"?, "sid"?}`. `execute` checks the command and
its parameter names, finds the login (by `sid`, else the one the door keeps for the
caller), checks who may run the command, runs it, and returns its result; every failure
is raised as a `CrdtmdsError` carrying its Check Point error code.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from crdtmds.api.call import Access, Call, Caller, Command, InvalidSyntax, Services
from crdtmds.api.commands import (
    cluster,
    cluster_status,
    generic,
    lifecycle,
    objects,
    revisions,
    rules,
    sections,
    sessions,
)
from crdtmds.api.params import tolerated
from crdtmds.errors import (
    CoreFailure,
    InvalidParameterName,
    SessionError,
    UnknownCommand,
    is_core_panic,
)

log = logging.getLogger("crdtmds.api")


def command_table() -> dict[str, Command]:
    """Every command, by name."""
    table: dict[str, Command] = {}
    for group in (
        sessions,
        objects,
        generic,
        rules,
        sections,
        revisions,
        cluster,
        cluster_status,
        lifecycle,
    ):
        table.update(group.COMMANDS)
    return table


class AdminAPI:
    """Every command of the administrators' API, over the services of one server."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.commands = command_table()

    async def execute(self, caller: Caller, request: Mapping[str, Any]) -> dict[str, Any]:
        """The `result` of one decoded request; raises `CrdtmdsError` for the `error`."""
        name = request.get("command")
        if not isinstance(name, str) or not name:
            raise InvalidSyntax("a request needs a 'command' string")
        command = self.commands.get(name)
        if command is None:
            raise UnknownCommand(f"unknown command '{name}'", details={"command": name})
        params = request.get("params")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise InvalidSyntax("'params' must be a JSON object")
        unknown = sorted(set(params) - command.params)
        if unknown:
            raise InvalidParameterName(
                f"Unrecognized parameter [{unknown[0]}]: '{name}' does not take "
                + ", ".join(repr(p) for p in unknown),
                details={"parameters": unknown},
            )
        call = Call(self.services, caller, params)
        sid = request.get("sid")
        sid = caller.sid if sid is None else sid
        if command.access is Access.OPEN:
            with contextlib.suppress(SessionError):
                call.login_ = await self.services.logins.login_for(sid)
        elif command.access is not Access.PUBLIC:
            call.login_ = await self.services.logins.login_for(sid)
        if command.access is Access.SUPERUSER:
            call.require_superuser()
        elif command.access is Access.WRITE:
            call.writable_session()
        try:
            result = await command.handler(call)
        except BaseException as exc:
            if not is_core_panic(exc):
                raise
            raise _core_failure(name, call, exc) from None
        notes = tolerated(params)
        if notes:
            result.setdefault("warnings", []).extend({"message": note} for note in notes)
        return result


def _core_failure(command: str, call: Call, exc: BaseException) -> CoreFailure:
    """The error a command answers when the Automerge core panicked under it, naming the
    command and the document; logged with its traceback."""
    login = call.login_
    domain = login.domain if login is not None else None
    document = domain.get("document-id") if domain else None
    where = f"domain {domain.get('name')!r} ({document})" if domain else "no domain"
    log.error("the Automerge core failed running %r on %s", command, where, exc_info=exc)
    return CoreFailure(
        f"internal error: the Automerge core failed running '{command}' on {where}",
        details={"command": command, "document": document},
    )
