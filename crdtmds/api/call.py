"""One command being run, and what a command is: who may run it (`Access`), the
parameters it accepts, who asks (`Caller`, the transport's record of a request's source
and login), and the services it may touch (`Services`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from crdtmds.api.tasks import Tasks
from crdtmds.app.cluster_admin import ClusterAdmin
from crdtmds.app.documents import Documents
from crdtmds.app.logins import Login, Logins
from crdtmds.app.sessions import Sessions
from crdtmds.app.status import StatusView
from crdtmds.config import ServerConfig
from crdtmds.core.cluster import READ_WRITE, SUPERUSER, ClusterDocument
from crdtmds.core.domain_state import DomainState
from crdtmds.core.session import Session
from crdtmds.errors import InvalidParameter, PermissionDenied, SessionError


@dataclass(slots=True)
class Caller:
    """Who sends a request, as its transport knows it: the source address (failed logins
    are counted per host) and the login the transport keeps for it, if any (a WebSocket
    connection remembers the login made on it; an HTTP request names its own)."""

    source: str
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class Services:
    """What commands may use: the application services of one server."""

    config: ServerConfig
    documents: Documents
    sessions: Sessions
    cluster_admin: ClusterAdmin
    logins: Logins
    status: StatusView
    tasks: Tasks


class InvalidSyntax(InvalidParameter):
    """A request that is not a JSON object with a string `command`."""

    code = "generic_err_invalid_syntax"


class Access(Enum):
    """Who may run a command."""

    PUBLIC = "public"
    """No login needed."""
    OPEN = "open"
    """No login needed, but the request's login, when it carries a valid one, is found
    (the command answers more with it)."""
    LOGGED_IN = "logged-in"
    """Any valid login."""
    READ = "read"
    """Read access to the login's domain, or to the domain named by the `domain` parameter."""
    WRITE = "write"
    """Read-write access to the login's domain, through its session."""
    SUPERUSER = "superuser"


T = TypeVar("T")
Handler = Callable[["Call"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Command:
    handler: Handler
    access: Access
    params: frozenset[str]
    """Every parameter the command accepts; anything else is refused before it runs."""


@dataclass(slots=True)
class Call:
    """One command being run: its parameters, its login, and what it may touch."""

    services: Services
    caller: Caller
    params: dict[str, Any]
    login_: Login | None = None

    @property
    def cluster(self) -> ClusterDocument:
        return self.services.documents.cluster

    @property
    def login(self) -> Login:
        if self.login_ is None:
            raise SessionError("this command needs a login")
        return self.login_

    # -- permissions

    def level(self, domain_name: str | None) -> str:
        """The administrator's current level on a domain; refuses one without access."""
        level = self.cluster.permission(self.login.admin, domain_name)
        if level is None:
            where = f"domain '{domain_name}'" if domain_name else "this server"
            raise PermissionDenied(
                f"administrator '{self.login.admin}' has no access to {where}",
                details={"domain": domain_name},
            )
        return level

    def require_superuser(self) -> None:
        if self.level(None) != SUPERUSER:
            raise PermissionDenied("this command needs a superuser")

    def domain_entry(self) -> dict[str, Any]:
        if self.login.domain is None:
            raise InvalidParameter(
                "this command needs a login to a domain (log in with 'domain')",
                details={"parameter": "domain"},
            )
        return self.login.domain

    # -- reads

    def read_view(self) -> tuple[DomainState, dict[str, Any]]:
        """The domain state this call reads, and that domain's cluster entry.

        The `domain` parameter reads another domain's published state, if the
        administrator may read it; otherwise the login's own domain as its session sees it.
        """
        ref = self.params.get("domain")
        own = self.login.domain
        if ref is not None:
            entry = self.cluster.domain_by_ref(ref)
            if own is None or entry["document-id"] != own["document-id"]:
                self.level(entry["name"])
                return self.services.documents.domain(entry["document-id"]).state, entry
        entry = self.domain_entry()
        self.level(entry["name"])
        session = self.login.session
        if session is not None and session.has_changes():
            return session.view, entry
        return self.services.documents.domain(entry["document-id"]).state, entry

    # -- writes

    def writable_session(self) -> Session:
        entry = self.domain_entry()
        if self.login.read_only or self.level(entry["name"]) not in (READ_WRITE, SUPERUSER):
            raise PermissionDenied(
                f"administrator '{self.login.admin}' may not change domain '{entry['name']}'"
                + (" in a read-only login" if self.login.read_only else ""),
                details={"domain": entry["name"]},
            )
        if self.login.session is None:
            raise SessionError("this login has no session to edit")
        return self.login.session

    @asynccontextmanager
    async def editing(self) -> AsyncIterator[Session]:
        """The login's session, locked, current, and saved to disk after the edit."""
        session = self.writable_session()
        async with self.services.logins.session_lock(session.uid):
            if not session.has_changes() and (
                session.base_heads != session.domain.heads()
                or self.services.documents.current_epoch(session.domain) is not session.domain
            ):
                self.services.sessions.start_from_live(session)
            try:
                yield session
            finally:
                await self.services.sessions.save_edits(session)

    @staticmethod
    async def off_loop(work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a worker thread, so that the event loop serves other calls and
        gossip meanwhile (the Automerge binding holds the GIL per call, not for a whole
        revert of many short calls). Run it under the session's lock and only on what
        that lock guards. Returns only once the thread is done, even when this call is
        cancelled: the lock must not be released while the thread still writes the
        draft."""
        future = asyncio.ensure_future(asyncio.to_thread(work, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await future
            raise

    @asynccontextmanager
    async def session_locked(self) -> AsyncIterator[Session]:
        session = self.writable_session()
        async with self.services.logins.session_lock(session.uid):
            yield session


def command(handler: Handler, access: Access, names: str = "", *groups: Iterable[str]) -> Command:
    """A command accepting the space-separated `names` and every name in `groups`."""
    accepted = set(names.split())
    for group in groups:
        accepted.update(group)
    return Command(handler, access, frozenset(accepted))
