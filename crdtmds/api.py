"""The administrators' API: JSON commands named and shaped like the Check Point Management API.

The node moves text between each `/api` WebSocket and an `ApiConnection`; this module does
no network I/O. One request is `{"id", "command", "params", "sid"?}` and its reply is
`{"id", "result"}` or `{"id", "error": {"code", "message", "details"}}`::

    api = AdminAPI(node)
    connection = api.connect("192.0.2.7")         # the peer's address, for login throttling
    reply = await connection.handle_text('{"id": 1, "command": "login", "params": {...}}')
    await connection.close()

A login lives on the server it was made on, in memory: it names an administrator, a
domain (or none, for the system-wide view) and, for a writable domain login, the
`Session` that holds the draft. The `sid` it returns works on any connection to that
server until `logout` or until the session timeout passes without a call. Drafts are
stored by the node, so `continue-last-session` finds one again after a restart.

Reads in a session with unpublished changes see that draft; a session without changes
reads the live domain, and is moved onto the live domain before its next edit, so that
it never edits a stale copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

import crdtmds
from crdtmds import auth, model
from crdtmds.cluster import READ_ONLY, READ_WRITE, SUPERUSER, public_administrator
from crdtmds.domain import DomainState, Layer
from crdtmds.errors import (
    AuthenticationFailed,
    CoreFailure,
    CrdtmdsError,
    InvalidParameter,
    MissingParameter,
    ObjectNotFound,
    PermissionDenied,
    SessionError,
    SessionExpired,
    UnknownCommand,
    ValidationError,
    is_core_panic,
)
from crdtmds.protocol import document_url

if TYPE_CHECKING:
    from crdtmds.node import Node
    from crdtmds.session import Session

log = logging.getLogger("crdtmds.api")

API_SERVER_VERSION = crdtmds.__version__
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
DETAILS_LEVELS = ("uid", "standard", "full")
MAX_SESSION_TIMEOUT = 86400
MAX_TASKS_KEPT = 1000
IGNORE_FLAGS = ("ignore-warnings", "ignore-errors")

PLURALS = {
    "host": "hosts",
    "network": "networks",
    "address-range": "address-ranges",
    "group": "groups",
    "service-tcp": "services-tcp",
    "service-udp": "services-udp",
}
"""Object type -> the noun of its list command (`show-hosts`, `show-services-tcp`)."""

ALIASES = {
    "host": ("ip-address",),
    "network": ("subnet", "mask-length", "subnet-mask"),
    "address-range": ("ip-address-first", "ip-address-last"),
}
"""Generic parameter names the model accepts besides its stored fields."""

ANY_SUMMARY = {"uid": model.ANY_UID, "name": model.ANY_NAME, "type": "CpmiAnyObject"}


class InvalidSyntax(InvalidParameter):
    """A request that is not a JSON object with a string `command`."""

    code = "generic_err_invalid_syntax"


class Access(Enum):
    """Who may run a command."""

    PUBLIC = "public"
    """No login needed."""
    LOGGED_IN = "logged-in"
    """Any valid login."""
    READ = "read"
    """Read access to the login's domain, or to the domain named by the `domain` parameter."""
    WRITE = "write"
    """Read-write access to the login's domain, through its session."""
    SUPERUSER = "superuser"


Handler = Callable[["Call"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Command:
    handler: Handler
    access: Access
    params: frozenset[str]
    """Every parameter the command accepts; anything else is refused before it runs."""


@dataclass(slots=True)
class Login:
    """One administrator's login on this server (kept in memory only)."""

    sid: str
    uid: str
    """The session's uid, or a uid of its own for a login without a session."""
    admin: str
    domain: dict[str, Any] | None
    """The cluster document's entry of the domain; None for the system-wide view."""
    session: Session | None
    read_only: bool
    timeout: float
    last_seen: float
    logged_in_at: float


@dataclass(slots=True)
class Call:
    """One command being run: its parameters, its login, and what it may touch."""

    api: AdminAPI
    connection: ApiConnection
    params: dict[str, Any]
    login_: Login | None = None

    @property
    def node(self) -> Node:
        return self.api.node

    @property
    def login(self) -> Login:
        if self.login_ is None:
            raise SessionError("this command needs a login")
        return self.login_

    # -- permissions

    def level(self, domain_name: str | None) -> str:
        """The administrator's current level on a domain; refuses one without access."""
        level = self.node.cluster.permission(self.login.admin, domain_name)
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
            entry = self.node.cluster.domain_by_ref(ref)
            if own is None or entry["document-id"] != own["document-id"]:
                self.level(entry["name"])
                return self.node.domain(entry["document-id"]).state, entry
        entry = self.domain_entry()
        self.level(entry["name"])
        session = self.login.session
        if session is not None and session.has_changes():
            return session.view, entry
        return self.node.domain(entry["document-id"]).state, entry

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
        async with self.api.session_lock(session.uid):
            if not session.has_changes() and session.base_heads != session.domain.heads():
                self.node.start_from_live(session)
            try:
                yield session
            finally:
                await self.node.save_session_edits(session)

    @asynccontextmanager
    async def session_locked(self) -> AsyncIterator[Session]:
        session = self.writable_session()
        async with self.api.session_lock(session.uid):
            yield session


# ---------------------------------------------------------------- parameter checks


def _string(params: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = params.get(key, default)
    if value is not None and not isinstance(value, str):
        raise InvalidParameter(f"'{key}' must be a string", details={"parameter": key})
    return value


def _required_string(params: Mapping[str, Any], key: str) -> str:
    value = _string(params, key)
    if not value:
        raise MissingParameter(f"missing required parameter '{key}'", details={"parameter": key})
    return value


def _boolean(params: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = params.get(key, default)
    return model.check_bool(value, key)


def _integer(
    params: Mapping[str, Any], key: str, default: int, low: int, high: int | None = None
) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"'{key}' must be an integer", details={"parameter": key})
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise InvalidParameter(f"'{key}' must be {bounds}", details={"parameter": key})
    return value


def _details_level(params: Mapping[str, Any]) -> str:
    level = params.get("details-level", "standard")
    if level not in DETAILS_LEVELS:
        raise InvalidParameter(
            f"'details-level' must be one of {', '.join(DETAILS_LEVELS)}",
            details={"parameter": "details-level"},
        )
    return level


def _check_ignore_flags(params: Mapping[str, Any]) -> None:
    for flag in IGNORE_FLAGS:
        if flag in params:
            model.check_bool(params[flag], flag)


def _page(items: list[Any], params: Mapping[str, Any]) -> tuple[list[Any], dict[str, int]]:
    """One page of `items` and its `from`/`to`/`total` (1-based, `to == total` at the end)."""
    limit = _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer(params, "offset", 0, 0)
    start = min(offset, len(items))
    chosen = items[start : start + limit]
    first = start + 1 if chosen else start
    return chosen, {"from": first, "to": start + len(chosen), "total": len(items)}


def _name_filter(params: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    text = (_string(params, "filter") or "").strip().lower()
    if not text:
        return lambda _: True
    return lambda record: text in str(record.get("name", "")).lower()


# ---------------------------------------------------------------- reply shapes


def _timestamp(seconds: float) -> dict[str, Any]:
    moment = datetime.fromtimestamp(seconds, UTC)
    return {"posix": int(seconds * 1000), "iso-8601": moment.isoformat(timespec="seconds")}


def _domain_ref(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": entry.get("name"), "uid": entry.get("uid"), "domain-type": "domain"}


def _summary(state: DomainState, uid: str) -> dict[str, Any]:
    """`{uid, name, type}` of a referenced object ("Any", or a missing one, included)."""
    if uid == model.ANY_UID:
        return dict(ANY_SUMMARY)
    record = state.objects.get(uid)
    if record is None:
        return {"uid": uid, "name": None, "type": "missing"}
    return {"uid": uid, "name": record.get("name"), "type": record.get("type")}


def _object_reply(
    record: Mapping[str, Any], state: DomainState, entry: Mapping[str, Any]
) -> dict[str, Any]:
    reply = {**record, "domain": _domain_ref(entry)}
    if record.get("type") == "group":
        reply["members"] = [_summary(state, uid) for uid in record.get("members", [])]
    return reply


def _rule_reply(
    rule: Mapping[str, Any],
    layer: Layer,
    number: int,
    entry: Mapping[str, Any],
    state: DomainState | None = None,
) -> dict[str, Any]:
    """A rule as replied; with `state`, its references expanded to `{uid, name, type}`."""
    reply = {
        **rule,
        "type": "access-rule",
        "layer": layer.uid,
        "rule-number": number,
        "domain": _domain_ref(entry),
    }
    if state is not None:
        for column in model.RULE_REFERENCE_FIELDS:
            reply[column] = [_summary(state, uid) for uid in rule.get(column, [])]
    return reply


def _rule_number(layer: Layer, uid: str) -> int:
    return layer.ordered_uids().index(uid) + 1


def _task_id() -> str:
    return model.new_uid()


# ---------------------------------------------------------------- the API


class AdminAPI:
    """Every command of the administrators' API, over one node.

    `throttle` limits failed logins per source; `clock` (monotonic seconds) drives the
    session timeouts and can be replaced in tests.
    """

    def __init__(
        self,
        node: Node,
        *,
        throttle: auth.LoginThrottle | None = None,
        session_timeout: int = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.throttle = throttle if throttle is not None else auth.LoginThrottle()
        self.session_timeout = session_timeout
        self.clock = clock
        self.logins: dict[str, Login] = {}
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._task_owner: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_login_at: dict[str, float] = {}
        self._dummy_hash: str | None = None
        self.commands: dict[str, Command] = _build_commands()

    def connect(self, source: str) -> ApiConnection:
        """A new connection from `source` (an address; failed logins are counted per source)."""
        return ApiConnection(self, source)

    # ------------------------------------------------------------ running one request

    async def execute(self, connection: ApiConnection, request: Mapping[str, Any]) -> Any:
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
            raise InvalidParameter(
                f"'{name}' does not take {', '.join(repr(p) for p in unknown)}",
                details={"parameters": unknown},
            )
        call = Call(self, connection, params)
        if command.access is not Access.PUBLIC:
            call.login_ = await self.login_for(connection, request.get("sid"))
        if command.access is Access.SUPERUSER:
            call.require_superuser()
        elif command.access is Access.WRITE:
            call.writable_session()
        try:
            return await command.handler(call)
        except BaseException as exc:
            if not is_core_panic(exc):
                raise
            raise _core_failure(name, call, exc) from None

    async def login_for(self, connection: ApiConnection, sid: Any) -> Login:
        """The live login named by `sid` (or bound to the connection); refreshes its timeout."""
        if sid is None:
            sid = connection.sid
        if sid is None:
            raise SessionError("not logged in: call 'login' first")
        if not isinstance(sid, str):
            raise SessionError("'sid' must be a string")
        login = self.logins.get(sid)
        if login is None:
            raise SessionError("wrong session id (log in again)")
        now = self.clock()
        if now - login.last_seen > login.timeout:
            await self._expire(login)
            raise SessionExpired("the session expired (log in again)")
        login.last_seen = now
        return login

    # ------------------------------------------------------------ logins

    async def login(self, connection: ApiConnection, params: Mapping[str, Any]) -> dict[str, Any]:
        user = _required_string(params, "user")
        password = _required_string(params, "password")
        domain_ref = _string(params, "domain")
        name = model.check_string(params.get("session-name", ""), "session-name", limit=128)
        description = model.check_string(params.get("session-description", ""),
                                         "session-description")  # fmt: skip
        timeout = _integer(params, "session-timeout", self.session_timeout, 1, MAX_SESSION_TIMEOUT)
        want_read_only = _boolean(params, "read-only")
        continue_last = _boolean(params, "continue-last-session")
        await self.check_password(connection.source, user, password, params.get("device-token"))
        entry = self.node.cluster.domain_by_ref(domain_ref) if domain_ref else None
        level = self.node.cluster.permission(user, entry["name"] if entry else None)
        if level is None:
            where = entry["name"] if entry else None
            raise PermissionDenied(
                f"administrator '{user}' may not log in to domain '{where}'",
                details={"domain": where},
            )
        read_only = want_read_only or level == READ_ONLY
        session = None
        if entry is not None:
            self.node.domain(entry["document-id"])  # refuses a domain not on this server yet
            if not read_only:
                session = await self._session_for(user, entry, name, description, continue_last)
        await self._sweep_expired()
        login = self._new_login(user, entry, session, read_only, timeout)
        connection.sid = login.sid
        reply = self._login_reply(login)
        log.info("%r logged in from %s to %s", user, connection.source,
                 repr(entry["name"]) if entry else "the system-wide view")  # fmt: skip
        # Lets this client's next logins skip throttles that attackers can fill.
        reply["device-token"] = auth.device_token(self.node.config.secret, user)
        return reply

    async def check_password(
        self, source: str, user: str, password: str, device_token: Any = None
    ) -> None:
        """The one password check of `/api` and `/sync`. The attempt is reserved with the
        throttle before hashing (parallel attempts cannot overrun it), an unknown user name
        costs the same scrypt as a known one (no probing), and scrypt runs in a worker
        thread (it would stall every connection of the server for tens of milliseconds)."""
        record = self.node.cluster.administrators().get(user)
        device = auth.device_key(self.node.config.secret, user, device_token)
        attempt = self.throttle.begin(_host_of(source), user, device)
        try:
            stored = record.get("password-hash") if record else None
            if not isinstance(stored, str):
                stored = await self._unknown_user_hash()
            if await asyncio.to_thread(auth.verify_password, password, stored) and record:
                attempt.succeeded()
                return
        finally:
            attempt.failed()  # no-op after succeeded(); counts a cancelled check as failed
        log.warning("failed login for %s from %s", _who(user, record), source)
        raise AuthenticationFailed("wrong user name or password")

    async def _unknown_user_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(auth.hash_password, auth.new_token())
        return self._dummy_hash

    async def _session_for(
        self, admin: str, entry: Mapping[str, Any], name: str, description: str, reuse: bool
    ) -> Session:
        """The draft to work in: the latest unattached one with changes, or a fresh one."""
        document_id = entry["document-id"]
        attached = {login.uid for login in self.logins.values()}
        free = [s for s in self.node.sessions_of(admin, document_id) if s.uid not in attached]
        for stale in [s for s in free if not s.has_changes()]:
            await self.node.close_session(stale)
        drafts = [s for s in free if s.has_changes()]
        if reuse and drafts:
            return max(drafts, key=lambda s: s.last_active)
        return await self.node.open_session(
            document_id, admin=admin, name=name, description=description
        )

    def _new_login(
        self,
        admin: str,
        entry: dict[str, Any] | None,
        session: Session | None,
        read_only: bool,
        timeout: int,
    ) -> Login:
        login = Login(
            sid=auth.new_token(),
            uid=session.uid if session is not None else model.new_uid(),
            admin=admin,
            domain=entry,
            session=session,
            read_only=read_only,
            timeout=float(timeout),
            last_seen=self.clock(),
            logged_in_at=time.time(),
        )
        self.logins[login.sid] = login
        return login

    def _login_reply(self, login: Login) -> dict[str, Any]:
        previous = self._last_login_at.get(login.admin)
        self._last_login_at[login.admin] = login.logged_in_at
        return {
            "sid": login.sid,
            "uid": login.uid,
            "url": self.node.config.url,
            "session-timeout": int(login.timeout),
            "last-login-was-at": _timestamp(previous) if previous is not None else None,
            "api-server-version": API_SERVER_VERSION,
            "read-only": login.read_only,
            "domain": _domain_ref(login.domain) if login.domain else None,
            "server": self.node.name,
        }

    async def logout(self, login: Login, connection: ApiConnection) -> None:
        self._forget_login(login)
        if connection.sid == login.sid:
            connection.sid = None
        await self._close_empty_session(login)

    def _forget_login(self, login: Login) -> None:
        self.logins.pop(login.sid, None)

    async def _close_empty_session(self, login: Login) -> None:
        """Forget the login's session unless it holds unpublished changes (kept for later)."""
        session = login.session
        if session is None or session.has_changes():
            return
        if any(other.uid == session.uid for other in self.logins.values()):
            return
        self._locks.pop(session.uid, None)
        await self.node.close_session(session)

    async def _sweep_expired(self) -> None:
        now = self.clock()
        for login in [x for x in self.logins.values() if now - x.last_seen > x.timeout]:
            await self._expire(login)

    async def _expire(self, login: Login) -> None:
        log.info("login of %r expired", login.admin)
        self._forget_login(login)
        await self._close_empty_session(login)

    def session_lock(self, uid: str) -> asyncio.Lock:
        lock = self._locks.get(uid)
        if lock is None:
            lock = self._locks[uid] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------ automerge-repo clients

    async def authenticate_repo_client(
        self, query: Mapping[str, str], source: str = "unknown"
    ) -> tuple[str, Callable[[str], bool]]:
        """The administrator behind an automerge-repo client's `/sync` URL query, and a
        `may_read(document_id)` that follows that administrator's current permissions.

        The query holds `user` and `password` (and optionally `device-token`), or `token`
        (a live login's sid); `source` is the client's address, for the login throttle.
        The cluster document (which holds password hashes) is never readable this way.
        """
        admin = await self._repo_client_admin(query, source)
        cluster = self.node.cluster

        def may_read(document_id: str) -> bool:
            for entry in cluster.domains().values():
                if entry.get("document-id") == document_id:
                    return cluster.permission(admin, entry["name"]) is not None
            return False

        return admin, may_read

    async def _repo_client_admin(self, query: Mapping[str, str], source: str) -> str:
        token = query.get("token")
        if token:
            login = self.logins.get(token)
            if login is None or self.clock() - login.last_seen > login.timeout:
                raise AuthenticationFailed("unknown or expired token")
            return login.admin
        user, password = query.get("user"), query.get("password")
        if not user or not password:
            raise AuthenticationFailed("give 'user' and 'password', or 'token'")
        await self.check_password(source, user, password, query.get("device-token"))
        return user

    # ------------------------------------------------------------ tasks

    def record_task(self, admin: str, name: str, details: dict[str, Any]) -> dict[str, Any]:
        task = {
            "task-id": _task_id(),
            "task-name": name,
            "status": "succeeded",
            "progress-percentage": 100,
            "suppressed": False,
            "task-details": [details],
        }
        self.tasks[task["task-id"]] = task
        self._task_owner[task["task-id"]] = admin
        while len(self.tasks) > MAX_TASKS_KEPT:
            old, _ = self.tasks.popitem(last=False)
            self._task_owner.pop(old, None)
        return task

    def task(self, task_id: str, admin: str, superuser: bool) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None or not (superuser or self._task_owner.get(task_id) == admin):
            raise ObjectNotFound(f"task '{task_id}' not found", details={"task-id": task_id})
        return task


class ApiConnection:
    """One client connection: feed it each text frame, send back what it returns."""

    def __init__(self, api: AdminAPI, source: str) -> None:
        self.api = api
        self.source = _host_of(source)
        """Where the connection comes from; failed logins are counted per host, not per port."""
        self.sid: str | None = None
        """The login made on this connection, used when a request carries no `sid`."""

    async def handle_text(self, text: str | bytes) -> str:
        """The JSON reply to one JSON request. Never raises: every failure is a reply."""
        request_id: Any = None
        command: Any = None
        try:
            request = _decode_request(text)
            request_id, command = request.get("id"), request.get("command")
            result = await self.api.execute(self, request)
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
        self.sid = None


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


def _who(user: str, record: Mapping[str, Any] | None) -> str:
    """How a failed login names its user in the log: an unknown name may be a password
    typed into the wrong field, so only names of existing administrators are written."""
    return f"administrator {user!r}" if record is not None else "an unknown user name"


def _host_of(source: str) -> str:
    """`192.0.2.7` of `192.0.2.7:51234`, `::1` of `[::1]:51234`; anything else as given."""
    if source.startswith("[") and "]:" in source:
        return source[1 : source.index("]:")]
    host, colon, port = source.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host
    return source


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


# ---------------------------------------------------------------- session commands


async def _login(call: Call) -> dict[str, Any]:
    return await call.api.login(call.connection, call.params)


async def _logout(call: Call) -> dict[str, Any]:
    await call.api.logout(call.login, call.connection)
    return {"message": "OK"}


async def _keepalive(call: Call) -> dict[str, Any]:
    return {"message": "OK"}


async def _show_status(call: Call) -> dict[str, Any]:
    local_status = getattr(call.node, "local_status", None)
    if callable(local_status):
        return dict(local_status())
    return {"server": call.node.name, "domains": call.node.domain_heads()}


async def _publish(call: Call) -> dict[str, Any]:
    comments = model.check_string(call.params.get("comments", ""), "comments")
    async with call.session_locked() as session:
        if not session.has_changes():
            revision = None
        else:
            revision = await call.node.publish(session, comments)
    details: dict[str, Any] = {"revision": revision}
    if revision is None:
        details["message"] = "nothing to publish"
    task = call.api.record_task(call.login.admin, "Publish operation", details)
    return {"task-id": task["task-id"], "revision": revision}


async def _discard(call: Call) -> dict[str, Any]:
    session = call.login.session
    if session is None:
        return {"message": "OK", "number-of-discarded-changes": 0}
    async with call.api.session_lock(session.uid):
        count = await call.node.discard(session)
    return {"message": "OK", "number-of-discarded-changes": count}


async def _show_task(call: Call) -> dict[str, Any]:
    ids = call.params.get("task-id")
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise MissingParameter("'task-id' must name a task", details={"parameter": "task-id"})
    superuser = call.node.cluster.permission(call.login.admin, None) == SUPERUSER
    return {"tasks": [call.api.task(i, call.login.admin, superuser) for i in ids]}


def _session_reply(call: Call, session: Session) -> dict[str, Any]:
    attached = [x for x in call.api.logins.values() if x.uid == session.uid]
    try:
        entry = call.node.cluster.domain_by_ref(session.domain.document_id)
    except CrdtmdsError:
        entry = {"name": session.domain.name, "uid": None}
    return {
        "uid": session.uid,
        "type": "session",
        "name": session.name,
        "description": session.description,
        "user-name": session.admin,
        "domain": _domain_ref(entry),
        "server": session.server,
        "changes": session.change_count(),
        "in-work": bool(attached),
        "state": "open",
        "connection-mode": "read write",
        "created-at": _timestamp(session.created_at),
        "last-activity": _timestamp(session.last_active),
    }


def _login_session_reply(call: Call, login: Login) -> dict[str, Any]:
    if login.session is not None:
        return _session_reply(call, login.session)
    return {
        "uid": login.uid,
        "type": "session",
        "name": "",
        "description": "",
        "user-name": login.admin,
        "domain": _domain_ref(login.domain) if login.domain else None,
        "server": call.node.name,
        "changes": 0,
        "in-work": True,
        "state": "open",
        "connection-mode": "read only" if login.read_only else "read write",
        "created-at": _timestamp(login.logged_in_at),
        "last-activity": _timestamp(time.time()),
    }


async def _show_session(call: Call) -> dict[str, Any]:
    uid = _string(call.params, "uid")
    if uid is None or uid == call.login.uid:
        return _login_session_reply(call, call.login)
    session = call.node.sessions.get(uid)
    if session is None:
        raise ObjectNotFound(f"session '{uid}' not found", details={"uid": uid})
    if session.admin != call.login.admin:
        call.require_superuser()
    return _session_reply(call, session)


async def _show_sessions(call: Call) -> dict[str, Any]:
    superuser = call.node.cluster.permission(call.login.admin, None) == SUPERUSER
    domain = call.login.domain
    sessions = [
        s
        for s in call.node.sessions.values()
        if (superuser or s.admin == call.login.admin)
        and (domain is None or s.domain.document_id == domain["document-id"])
    ]
    sessions.sort(key=lambda s: (s.created_at, s.uid))
    level = _details_level(call.params)
    page, bounds = _page(sessions, call.params)
    objects: list[Any] = [
        s.uid if level == "uid" else _session_reply(call, s) for s in page
    ]  # fmt: skip
    return {"objects": objects, **bounds}


async def _show_changes(call: Call) -> dict[str, Any]:
    call.domain_entry()
    session = call.login.session
    changes = session.show_changes() if session is not None else {}
    added, modified, deleted = (changes.get(k, []) for k in ("added", "modified", "deleted"))
    return {
        "session": call.login.uid,
        "added-objects": added,
        "modified-objects": modified,
        "deleted-objects": deleted,
        "total": len(added) + len(modified) + len(deleted),
        "objects-dictionary": _changes_dictionary(session, [*added, *modified, *deleted]),
    }


def _changes_dictionary(
    session: Session | None, items: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`{uid, name, type}` of every object the changes refer to (members, rule columns),
    as the draft sees it, or as its base did for objects the draft deleted."""
    if session is None:
        return []
    uids: dict[str, None] = {}
    for item in items:
        values = [item.get(f) for f in (*model.RULE_REFERENCE_FIELDS, "members")]
        for change in item.get("fields", {}).values():
            values += [change.get("old"), change.get("new")]
        for value in values:
            if isinstance(value, list):
                uids.update(dict.fromkeys(u for u in value if isinstance(u, str)))
    return [
        _summary(session.view if uid in session.view.objects else session.base, uid) for uid in uids
    ]


# ---------------------------------------------------------------- objects


def _object_params(obj_type: str, verb: str) -> frozenset[str]:
    fields = (*model.COMMON_FIELDS, *model.TYPE_FIELDS[obj_type], *ALIASES.get(obj_type, ()))
    if verb == "add":
        return frozenset((*fields, "details-level", *IGNORE_FLAGS))
    if verb == "set":
        return frozenset((*fields, "uid", "new-name", "details-level", *IGNORE_FLAGS))
    if verb == "delete":
        return frozenset(("uid", "name", "details-level", *IGNORE_FLAGS))
    return frozenset(("uid", "name", "details-level", "domain"))


async def _add_object(obj_type: str, call: Call) -> dict[str, Any]:
    _check_ignore_flags(call.params)
    async with call.editing() as session:
        record = session.add_object(obj_type, call.params)
    return _object_reply(record, session.view, call.domain_entry())


async def _set_object(obj_type: str, call: Call) -> dict[str, Any]:
    _check_ignore_flags(call.params)
    async with call.editing() as session:
        record = session.set_object(obj_type, call.params)
    return _object_reply(record, session.view, call.domain_entry())


async def _delete_object(obj_type: str, call: Call) -> dict[str, Any]:
    _check_ignore_flags(call.params)
    async with call.editing() as session:
        session.delete_object(obj_type, call.params)
    return {"message": "OK"}


async def _show_object(obj_type: str, call: Call) -> dict[str, Any]:
    _details_level(call.params)
    state, entry = call.read_view()
    ref = call.params.get("uid", call.params.get("name"))
    if ref is None:
        raise MissingParameter("name the object with 'uid' or 'name'",
                               details={"parameter": "name"})  # fmt: skip
    return _object_reply(state.get_object(ref, obj_type), state, entry)


async def _show_objects(obj_type: str, call: Call) -> dict[str, Any]:
    level = _details_level(call.params)
    state, entry = call.read_view()
    wanted = _name_filter(call.params)
    found = [r for r in state.objects_of_type(obj_type) if wanted(r)]
    page, bounds = _page(found, call.params)
    objects: list[Any] = [
        r["uid"] if level == "uid" else _object_reply(r, state, entry) for r in page
    ]  # fmt: skip
    return {"objects": objects, **bounds}


async def _where_used(call: Call) -> dict[str, Any]:
    state, entry = call.read_view()
    ref = call.params.get("uid", call.params.get("name"))
    if ref is None:
        raise MissingParameter("name the object with 'uid' or 'name'",
                               details={"parameter": "name"})  # fmt: skip
    target = state.get_object(ref)
    objects: list[dict[str, Any]] = []
    rules: dict[str, dict[str, Any]] = {}
    for use in state.where_used(target["uid"]):
        if use["type"] == "group":
            objects.append(_summary(state, use["uid"]))
            continue
        found = rules.setdefault(
            use["uid"],
            {
                "rule": {"uid": use["uid"], "name": use["name"], "type": "access-rule"},
                "layer": use["layer"],
                "position": use["rule-number"],
                "rule-columns": [],
            },
        )
        found["rule-columns"].append(use["column"])
    return {
        "object": _summary(state, target["uid"]),
        "domain": _domain_ref(entry),
        "used-directly": {
            "total": len(objects) + len(rules),
            "objects": objects,
            "access-control-rules": list(rules.values()),
        },
    }


# ---------------------------------------------------------------- access rules


RULE_PARAMS = frozenset((*model.RULE_FIELDS, "layer", "details-level", *IGNORE_FLAGS))
RULE_REF_PARAMS = frozenset(("uid", "name", "rule-number", "layer"))


async def _add_rule(call: Call) -> dict[str, Any]:
    _check_ignore_flags(call.params)
    async with call.editing() as session:
        rule = session.add_rule(call.params)
    return _session_rule_reply(call, session, rule)


async def _set_rule(call: Call) -> dict[str, Any]:
    _check_ignore_flags(call.params)
    async with call.editing() as session:
        rule = session.set_rule(call.params)
    return _session_rule_reply(call, session, rule)


async def _delete_rule(call: Call) -> dict[str, Any]:
    _check_ignore_flags(call.params)
    async with call.editing() as session:
        session.delete_rule(call.params)
    return {"message": "OK"}


def _session_rule_reply(call: Call, session: Session, rule: Mapping[str, Any]) -> dict[str, Any]:
    layer = session.view.get_layer(rule.get("layer", call.params.get("layer")))
    number = _rule_number(layer, rule["uid"])
    return _rule_reply(rule, layer, number, call.domain_entry(), session.view)


async def _show_rule(call: Call) -> dict[str, Any]:
    _details_level(call.params)
    state, entry = call.read_view()
    layer = state.get_layer(call.params.get("layer"))
    ref = next((call.params[k] for k in ("uid", "rule-number", "name") if k in call.params), None)
    if ref is None:
        raise MissingParameter("name the rule with 'uid', 'rule-number' or 'name'",
                               details={"parameter": "uid"})  # fmt: skip
    rule = state.get_rule(layer, ref)
    return _rule_reply(rule, layer, _rule_number(layer, rule["uid"]), entry, state)


async def _show_rulebase(call: Call) -> dict[str, Any]:
    level = _details_level(call.params)
    dictionary = _boolean(call.params, "use-object-dictionary", True)
    state, entry = call.read_view()
    layer = state.get_layer(call.params.get("uid", call.params.get("name")))
    wanted = _name_filter(call.params)
    numbered = [
        (number, layer.rules[uid])
        for number, uid in enumerate(layer.ordered_uids(), start=1)
        if wanted(layer.rules[uid])
    ]
    page, bounds = _page(numbered, call.params)
    expand_into = None if dictionary else state
    rules = [_rule_reply(rule, layer, n, entry, expand_into) for n, rule in page]
    if level == "uid":
        rules = [{"uid": r["uid"], "rule-number": r["rule-number"]} for r in rules]
    reply: dict[str, Any] = {"uid": layer.uid, "name": layer.name, **bounds, "rulebase": rules}
    if dictionary:
        reply["objects-dictionary"] = _objects_dictionary(state, entry, (r for _, r in page))
    return reply


def _objects_dictionary(
    state: DomainState, entry: Mapping[str, Any], rules: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    uids: dict[str, None] = {}
    for rule in rules:
        for column in model.RULE_REFERENCE_FIELDS:
            uids.update(dict.fromkeys(rule.get(column, [])))
    objects = []
    for uid in uids:
        record = state.objects.get(uid)
        objects.append(_object_reply(record, state, entry) if record else _summary(state, uid))
    return objects


# ---------------------------------------------------------------- revisions and verify


async def _show_revisions(call: Call) -> dict[str, Any]:
    state, entry = call.read_view()
    revisions = [{**r, "type": "revision", "domain": _domain_ref(entry)} for r in state.revisions]
    revisions.reverse()  # newest first
    page, bounds = _page(revisions, call.params)
    return {"objects": page, **bounds}


async def _revert_to_revision(call: Call) -> dict[str, Any]:
    target = _revert_target(call.params)
    comments = model.check_string(call.params.get("comments", ""), "comments")
    async with call.editing() as session:
        if session.has_changes():
            raise ValidationError(
                "the session has unpublished changes: publish or discard them before a revert"
            )
        revision = _find_revision(session.view, target)
        session.revert_to(revision["uid"])
        note = comments or f"revert to revision {revision['uid']}"
        published = await call.node.publish(session, note)
    task = call.api.record_task(call.login.admin, "Revert operation", {"revision": published})
    return {"message": "OK", "task-id": task["task-id"], "revision": published}


def _revert_target(params: Mapping[str, Any]) -> str:
    for key in ("to-revision", "to-session"):
        if key in params:
            value = params[key]
            if not isinstance(value, str) or not value:
                raise InvalidParameter(
                    f"'{key}' must be a revision uid", details={"parameter": key}
                )
            return value
    raise MissingParameter("give 'to-revision' (a revision uid)",
                           details={"parameter": "to-revision"})  # fmt: skip


def _find_revision(state: DomainState, ref: str) -> dict[str, Any]:
    """A revision by its uid, or the latest one published by the session `ref`."""
    for revision in reversed(state.revisions):
        if ref in (revision.get("uid"), revision.get("session")):
            return revision
    raise ObjectNotFound(f"revision '{ref}' not found", details={"reference": ref})


async def _verify_policy(call: Call) -> dict[str, Any]:
    state, entry = call.read_view()
    problems = state.verify()
    return {"domain": _domain_ref(entry), "problems": problems, "total": len(problems)}


# ---------------------------------------------------------------- cluster commands


def _domain_reply(call: Call, entry: Mapping[str, Any]) -> dict[str, Any]:
    document_id = entry.get("document-id", "")
    domain = call.node.domains.get(document_id)
    return {
        "uid": entry.get("uid"),
        "name": entry.get("name"),
        "type": "domain",
        "document-id": document_id,
        "url": document_url(document_id),
        "created-at": entry.get("created-at"),
        "created-by": entry.get("created-by"),
        "available": domain is not None and domain.is_domain_document(),
    }


async def _show_domains(call: Call) -> dict[str, Any]:
    cluster = call.node.cluster
    visible = [
        entry
        for name, entry in sorted(cluster.domains().items())
        if cluster.permission(call.login.admin, name) is not None
    ]
    page, bounds = _page(visible, call.params)
    return {"objects": [_domain_reply(call, e) for e in page], **bounds}


async def _add_domain(call: Call) -> dict[str, Any]:
    name = model.check_name(call.params.get("name"), "name")
    entry = await call.node.create_domain(name, created_by=call.login.admin)
    log.info("%r added domain %r", call.login.admin, name)
    return _domain_reply(call, entry)


async def _show_servers(call: Call) -> dict[str, Any]:
    servers = [
        {**entry, "type": "server", "this-server": name == call.node.name}
        for name, entry in sorted(call.node.cluster.servers().items())
    ]
    page, bounds = _page(servers, call.params)
    return {"objects": page, **bounds}


async def _add_administrator(call: Call) -> dict[str, Any]:
    name = model.check_name(call.params.get("name"), "name")
    password = _required_string(call.params, "password")
    superuser = _boolean(call.params, "superuser")
    grants = call.params.get("domains", {})
    if not isinstance(grants, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in grants.items()
    ):
        raise InvalidParameter(
            "'domains' must map domain names to read-only or read-write",
            details={"parameter": "domains"},
        )
    entry = await call.node.add_administrator(name, password, superuser=superuser, domains=grants)
    log.info("%r added administrator %r", call.login.admin, name)
    return {**public_administrator(entry), "type": "administrator"}


async def _show_administrators(call: Call) -> dict[str, Any]:
    admins = call.node.cluster.administrators()
    if call.node.cluster.permission(call.login.admin, None) != SUPERUSER:
        admins = {k: v for k, v in admins.items() if k == call.login.admin}
    records = [
        {**public_administrator(entry), "type": "administrator"}
        for _, entry in sorted(admins.items())
    ]
    page, bounds = _page(records, call.params)
    return {"objects": page, **bounds}


# ---------------------------------------------------------------- the command table

PAGING = frozenset(("limit", "offset", "details-level"))


def _cmd(handler: Handler, access: Access, names: str = "", *groups: Iterable[str]) -> Command:
    """A command accepting the space-separated `names` and every name in `groups`."""
    accepted = set(names.split())
    for group in groups:
        accepted.update(group)
    return Command(handler, access, frozenset(accepted))


def _build_commands() -> dict[str, Command]:
    public, logged_in, read, write = Access.PUBLIC, Access.LOGGED_IN, Access.READ, Access.WRITE
    login_params = (
        "user password domain session-name session-description session-timeout read-only"
        " continue-last-session device-token"
    )
    commands = {
        "login": _cmd(_login, public, login_params),
        "show-status": _cmd(_show_status, public),
        "logout": _cmd(_logout, logged_in),
        "keepalive": _cmd(_keepalive, logged_in),
        "publish": _cmd(_publish, write, "comments"),
        "discard": _cmd(_discard, logged_in),
        "show-task": _cmd(_show_task, logged_in, "task-id details-level"),
        "show-session": _cmd(_show_session, logged_in, "uid"),
        "show-sessions": _cmd(_show_sessions, logged_in, "", PAGING),
        "show-changes": _cmd(_show_changes, read, "details-level"),
        "add-access-rule": _cmd(_add_rule, write, "position", RULE_PARAMS),
        "set-access-rule": _cmd(
            _set_rule, write, "new-name new-position", RULE_PARAMS, RULE_REF_PARAMS
        ),
        "delete-access-rule": _cmd(_delete_rule, write, "", RULE_REF_PARAMS, IGNORE_FLAGS),
        "show-access-rule": _cmd(_show_rule, read, "details-level domain", RULE_REF_PARAMS),
        "show-access-rulebase": _cmd(
            _show_rulebase, read, "uid name filter use-object-dictionary domain", PAGING
        ),
        "where-used": _cmd(_where_used, read, "uid name details-level domain"),
        "show-revisions": _cmd(_show_revisions, read, "domain", PAGING),
        "revert-to-revision": _cmd(_revert_to_revision, write, "to-revision to-session comments"),
        "verify-policy": _cmd(_verify_policy, read, "domain policy-package"),
        "show-domains": _cmd(_show_domains, logged_in, "", PAGING),
        "add-domain": _cmd(_add_domain, Access.SUPERUSER, "name"),
        "show-servers": _cmd(_show_servers, logged_in, "", PAGING),
        "add-administrator": _cmd(
            _add_administrator, Access.SUPERUSER, "name password superuser domains"
        ),
        "show-administrators": _cmd(_show_administrators, logged_in, "", PAGING),
    }
    for obj_type, plural in PLURALS.items():
        params = partial(_object_params, obj_type)
        commands[f"add-{obj_type}"] = _cmd(partial(_add_object, obj_type), write, "", params("add"))
        commands[f"set-{obj_type}"] = _cmd(partial(_set_object, obj_type), write, "", params("set"))
        commands[f"delete-{obj_type}"] = _cmd(
            partial(_delete_object, obj_type), write, "", params("delete")
        )
        commands[f"show-{obj_type}"] = _cmd(
            partial(_show_object, obj_type), read, "", params("show")
        )
        commands[f"show-{plural}"] = _cmd(
            partial(_show_objects, obj_type), read, "filter domain", PAGING
        )
    return commands
