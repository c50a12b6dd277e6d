"""Logins on one server: who is logged in (by `sid`), with which domain and session, until
logout or a timeout; the one password check of every door (`/api`, `/sync`, the Web API),
throttled; and the automerge-repo clients' credentials.

A login names an administrator, a domain (or none, for the system-wide view) and, for a
writable domain login, the `Session` that holds the draft. Logins live in memory; drafts
are stored by `Sessions`, so `continue-last-session` finds one again after a restart;
when the database lost it instead, the login says so (`Login.warnings`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crdtmds.app import lost_drafts
from crdtmds.app.documents import Documents
from crdtmds.app.sessions import Sessions
from crdtmds.core import auth, model
from crdtmds.core.cluster import READ_ONLY
from crdtmds.core.session import Session
from crdtmds.errors import AuthenticationFailed, PermissionDenied, SessionError, SessionExpired

log = logging.getLogger("crdtmds.logins")

DEFAULT_SESSION_TIMEOUT = 600


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
    previous_login_at: float | None = None
    """When this administrator last logged in to this server before this login."""
    warnings: list[str] = field(default_factory=list)
    """What the login's reply tells its administrator (a draft to continue was lost)."""


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """What a door asks of a login, once its parameters are checked."""

    user: str
    password: str
    domain: str | None = None
    session_name: str = ""
    session_description: str = ""
    timeout: int = DEFAULT_SESSION_TIMEOUT
    read_only: bool = False
    continue_last_session: bool = False
    device_token: Any = None


class Logins:
    """The logins of one server. `clock` (monotonic seconds) drives the timeouts."""

    def __init__(
        self,
        documents: Documents,
        sessions: Sessions,
        secret: str,
        *,
        throttle: auth.LoginThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.documents = documents
        self.sessions = sessions
        self.secret = secret
        self.throttle = throttle if throttle is not None else auth.LoginThrottle()
        self.clock = clock
        self.by_sid: dict[str, Login] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_login_at: dict[str, float] = {}
        self._dummy_hash: str | None = None

    # ------------------------------------------------------------ logging in and out

    async def log_in(self, source: str, request: LoginRequest) -> Login:
        """A new login, once the password checks out and the administrator may log in to
        the domain; a writable domain login gets a session (a draft)."""
        user, cluster = request.user, self.documents.cluster
        await self.check_password(source, user, request.password, request.device_token)
        entry = cluster.domain_by_ref(request.domain) if request.domain else None
        level = cluster.permission(user, entry["name"] if entry else None)
        if level is None:
            where = entry["name"] if entry else None
            raise PermissionDenied(
                f"administrator '{user}' may not log in to domain '{where}'",
                details={"domain": where},
            )
        read_only = request.read_only or level == READ_ONLY
        session, warnings = None, []
        if entry is not None:
            self.documents.domain(entry["document-id"])  # refuses a domain not here yet
            if not read_only:
                session = await self._session_for(user, entry, request)
            if request.continue_last_session and (session is None or not session.has_changes()):
                lost = await self.sessions.take_lost(user, entry["document-id"])
                warnings = [lost_drafts.login_warning(e) for e in lost]
        await self._sweep_expired()
        login = self._new_login(user, entry, session, read_only, request.timeout)
        login.warnings = warnings
        log.info("%r logged in from %s to %s", user, source,
                 repr(entry["name"]) if entry else "the system-wide view")  # fmt: skip
        return login

    def device_token(self, user: str) -> str:
        """A token that lets this client's next logins skip throttles attackers can fill."""
        return auth.device_token(self.secret, user)

    async def check_password(
        self, source: str, user: str, password: str, device_token: Any = None
    ) -> None:
        """The one password check of every door. The attempt is reserved with the
        throttle before hashing (parallel attempts cannot overrun it), an unknown user name
        costs the same scrypt as a known one (no probing), and scrypt runs in a worker
        thread (it would stall every connection of the server for tens of milliseconds)."""
        record = self.documents.cluster.administrators().get(user)
        device = auth.device_key(self.secret, user, device_token)
        attempt = self.throttle.begin(host_of(source), user, device)
        try:
            stored = record.get("password-hash") if record else None
            if not isinstance(stored, str):
                stored = await self._unknown_user_hash()
            if await asyncio.to_thread(auth.verify_password, password, stored) and record:
                attempt.succeeded()
                if record.get("locked"):
                    log.warning("login of locked administrator %r from %s", user, source)
                    raise AuthenticationFailed(f"administrator '{user}' is locked")
                return
        finally:
            attempt.failed()  # no-op after succeeded(); counts a cancelled check as failed
        log.warning("failed login for %s from %s", _who(user, record), source)
        raise AuthenticationFailed("wrong user name or password")

    async def login_for(self, sid: Any) -> Login:
        """The live login named by `sid`; refreshes its timeout. An expired one is dropped
        (its empty session closes with it) and refused."""
        if sid is None:
            raise SessionError("not logged in: call 'login' first")
        if not isinstance(sid, str):
            raise SessionError("'sid' must be a string")
        login = self.by_sid.get(sid)
        if login is None:
            raise SessionError("wrong session id (log in again)")
        if self._revoked(login):
            self.by_sid.pop(sid, None)
            raise SessionError("this login has ended: its administrator or domain is gone")
        now = self.clock()
        if now - login.last_seen > login.timeout:
            await self._expire(login)
            raise SessionExpired("the session expired (log in again)")
        login.last_seen = now
        return login

    def peek(self, sid: Any) -> Login | None:
        """The live login named by `sid`, without refreshing its timeout (a watcher such
        as the console's event stream must not keep a login alive); None when there is
        none, or it expired or ended."""
        login = self.by_sid.get(sid) if isinstance(sid, str) else None
        if login is None or self.clock() - login.last_seen > login.timeout:
            return None
        return None if self._revoked(login) else login

    async def log_out(self, login: Login) -> None:
        self.by_sid.pop(login.sid, None)
        await self._close_empty_session(login)

    def drop_revoked(self) -> list[Login]:
        """End, at once, the logins the cluster document no longer allows: of
        administrators deleted or locked, or to a deleted domain. Returns them; their
        sessions are for `close_sessions_of` to settle."""
        revoked = [login for login in self.by_sid.values() if self._revoked(login)]
        self._follow_renames()
        for login in revoked:
            self.by_sid.pop(login.sid, None)
            log.info("login of %r ended: administrator or domain removed or locked", login.admin)
        return revoked

    async def close_sessions_of(self, revoked: list[Login]) -> None:
        """Settle the sessions of ended logins: a deleted administrator's drafts are
        discarded (nobody can continue them), and so are drafts of a deleted domain; a
        locked administrator's drafts with changes are kept for when they are unlocked."""
        cluster = self.documents.cluster
        for login in revoked:
            session = login.session
            if session is None or self.attached(session.uid):
                continue
            gone = login.admin not in cluster.administrators() or cluster.is_deleted(
                session.domain.domain_id
            )
            if gone or not session.has_changes():
                async with self.session_lock(session.uid):
                    await self.sessions.close(session)
                self._locks.pop(session.uid, None)

    def _follow_renames(self) -> None:
        """Logins to a domain renamed meanwhile take its new entry (permissions follow the
        name)."""
        by_document = {e["document-id"]: e for e in self.documents.cluster.domains().values()}
        for login in self.by_sid.values():
            if login.domain is not None:
                login.domain = by_document.get(login.domain["document-id"], login.domain)

    def _revoked(self, login: Login) -> bool:
        cluster = self.documents.cluster
        if cluster.permission(login.admin, None) is None:  # deleted or locked
            return True
        return login.domain is not None and cluster.is_deleted(login.domain["document-id"])

    def attached(self, session_uid: str) -> bool:
        """Whether a live login works in the session `session_uid`."""
        return any(login.uid == session_uid for login in self.by_sid.values())

    def session_lock(self, uid: str) -> asyncio.Lock:
        """The lock that serialises the edits and publishes of one session."""
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
        cluster = self.documents.cluster

        def may_read(document_id: str) -> bool:
            # A later epoch's document (`app/epochs.py`) is read as its domain is.
            domain_id = self.documents.epochs.domain_id(document_id)
            for entry in cluster.domains().values():
                if entry.get("document-id") == domain_id:
                    return cluster.permission(admin, entry["name"]) is not None
            return False

        return admin, may_read

    async def _repo_client_admin(self, query: Mapping[str, str], source: str) -> str:
        token = query.get("token")
        if token:
            login = self.peek(token)
            if login is None:
                raise AuthenticationFailed("unknown or expired token")
            return login.admin
        user, password = query.get("user"), query.get("password")
        if not user or not password:
            raise AuthenticationFailed("give 'user' and 'password', or 'token'")
        await self.check_password(source, user, password, query.get("device-token"))
        return user

    # ------------------------------------------------------------ inside

    async def _unknown_user_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(auth.hash_password, auth.new_token())
        return self._dummy_hash

    async def _session_for(
        self, admin: str, entry: Mapping[str, Any], request: LoginRequest
    ) -> Session:
        """The draft to work in: the latest unattached one with changes, or a fresh one."""
        document_id = entry["document-id"]
        free = [s for s in self.sessions.of(admin, document_id) if not self.attached(s.uid)]
        for stale in [s for s in free if not s.has_changes()]:
            await self.sessions.close(stale)
        drafts = [s for s in free if s.has_changes()]
        if request.continue_last_session and drafts:
            return max(drafts, key=lambda s: s.last_active)
        return await self.sessions.open(
            document_id,
            admin=admin,
            name=request.session_name,
            description=request.session_description,
        )

    def _new_login(
        self,
        admin: str,
        entry: dict[str, Any] | None,
        session: Session | None,
        read_only: bool,
        timeout: int,
    ) -> Login:
        now = time.time()
        login = Login(
            sid=auth.new_token(),
            uid=session.uid if session is not None else model.new_uid(),
            admin=admin,
            domain=entry,
            session=session,
            read_only=read_only,
            timeout=float(timeout),
            last_seen=self.clock(),
            logged_in_at=now,
            previous_login_at=self._last_login_at.get(admin),
        )
        self._last_login_at[admin] = now
        self.by_sid[login.sid] = login
        return login

    async def _close_empty_session(self, login: Login) -> None:
        """Forget the login's session unless it holds unpublished changes (kept for later)."""
        session = login.session
        if session is None or session.has_changes() or self.attached(session.uid):
            return
        self._locks.pop(session.uid, None)
        await self.sessions.close(session)

    async def _sweep_expired(self) -> None:
        now = self.clock()
        for login in [x for x in self.by_sid.values() if now - x.last_seen > x.timeout]:
            await self._expire(login)

    async def _expire(self, login: Login) -> None:
        log.info("login of %r expired", login.admin)
        self.by_sid.pop(login.sid, None)
        await self._close_empty_session(login)


def _who(user: str, record: Mapping[str, Any] | None) -> str:
    """How a failed login names its user in the log: an unknown name may be a password
    typed into the wrong field, so only names of existing administrators are written."""
    return f"administrator {user!r}" if record is not None else "an unknown user name"


def host_of(source: str) -> str:
    """`192.0.2.7` of `192.0.2.7:51234`, `::1` of `[::1]:51234`; anything else as given.
    Failed logins are counted per host, not per port."""
    if source.startswith("[") and "]:" in source:
        return source[1 : source.index("]:")]
    host, colon, port = source.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host
    return source
