"""Python client of the administrators' API, with failover across servers.

    async with Client(["ws://a:8443", "ws://b:8443"], user="alice", password="...",
                      domain="acme") as client:
        await client.call("add-host", **{"name": "web", "ipv4-address": "192.0.2.10"})
        await client.call("publish")

Every command of `crdtmds.api` goes through `call`; an error reply raises `ApiError` with
the server's code, message and details.

Failover. A login and its draft live on one server. When the connection to it is lost
(refused, reset or closed, or silent for `reply_timeout` seconds), the client logs in on
the next server of its list (and lastly on the lost one again). A reply that is merely
slow on an open connection is waited for: `on_wait(url, command, seconds)` hears about it
every few seconds (at most every `timeout`). Then, after a loss:

- If no draft can have been left behind (no edit since the last publish or discard), the
  command is retried on the new server and returns normally.
- If edits were sent since the last publish or discard, they stay unpublished on the lost
  server. The client logs a WARNING, appends a `LeftBehind(server, session)` to
  `client.left_behind`, and the command raises `SessionLeftBehind` instead of running in
  a session that lacks those edits. The client is then logged in on the new server in
  an empty session; redo the edits there, or go back to the lost server when it is up
  again and log in with `continue-last-session` to take the draft over.
- If the connection came back to the same server, the login continues the stored draft
  (`continue-last-session`), and only an edit whose reply was lost raises
  `OutcomeUnknown`, since it may or may not be in the draft.
- A publish, discard or revert whose reply was lost raises `OutcomeUnknown` wherever the
  client ends up (even nowhere): it may have happened on the lost server. Its details
  name that server and the session whose revision to look for.

A request larger than `max_request_size` (the servers' default frame limit, 16 MiB) is
refused before it is sent, and a server's close for a request over its own limit (code
1009) is reported as such: both raise `RequestTooLarge` and the client stays where it is.

A login that the server no longer knows (its timeout passed, or the server restarted) is
renewed on the same server with `continue-last-session`, when the client has the password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from crdtmds.api_socket import (
    MAX_REQUEST_SIZE,
    REPLY_TIMEOUT,
    ApiError,
    ApiSocket,
    TransportFailure,
    WaitListener,
    api_url,
)

log = logging.getLogger("crdtmds.client")

T = TypeVar("T")

SESSION_GONE_CODES = frozenset({"generic_err_wrong_session_id", "generic_err_session_expired"})
ENDS_DRAFT = frozenset({"publish", "discard", "revert-to-revision"})
NOT_DRAFT_EDITS = frozenset({
    "add-domain", "set-domain", "delete-domain",
    "add-administrator", "set-administrator", "delete-administrator",
})  # fmt: skip
"""Writes that apply at once (cluster document), not to the session's draft."""


class ServerUnreachable(ApiError):
    """No server of the list could be reached (or logged in to)."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__("err_server_unreachable", message, details=details)


class SessionLeftBehind(ApiError):
    """Unpublished edits stayed on a server the client lost; the command did not run."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__("err_session_left_behind", message, details=details)


class OutcomeUnknown(ApiError):
    """The connection broke after an edit was sent and before its reply arrived."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__("err_outcome_unknown", message, details=details)


@dataclass(frozen=True, slots=True)
class LeftBehind:
    """An unpublished draft on a server the client lost."""

    server: str
    session: str | None


def is_draft_edit(command: str) -> bool:
    """Whether `command` changes the session's draft (so it must be published)."""
    return command.startswith(("add-", "set-", "delete-")) and command not in NOT_DRAFT_EDITS


def ending_unknown(
    command: str, lost: str, session: str | None, more: str, *, now_on: str | None = None
) -> OutcomeUnknown:
    """For a publish, discard or revert whose reply was lost with server `lost`."""
    what = {"publish": "publish", "discard": "discard"}.get(command, "revert")
    check = "the session's changes" if command == "discard" else "the revisions"
    return OutcomeUnknown(
        f"the {what} may have succeeded on {lost}: the connection was lost before it "
        f"replied. Check {check} (a revision of session {session} means it did) before "
        f"running it again{more}",
        details={"server": lost, "command": command, "session": session, "now-on": now_on},
    )


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code (the command line)."""
    return asyncio.run(coroutine)


class Client:
    """A login on one of several servers, moved to another when its server is lost."""

    def __init__(
        self,
        urls: list[str],
        *,
        user: str,
        password: str | None = None,
        domain: str | None = None,
        session_name: str | None = None,
        timeout: float = 10,
        read_only: bool = False,
        continue_last_session: bool = False,
        device_token: str | None = None,
        max_request_size: int = MAX_REQUEST_SIZE,
        reply_timeout: float = REPLY_TIMEOUT,
        on_wait: WaitListener | None = None,
    ) -> None:
        if not urls:
            raise ValueError("give at least one server URL")
        self.urls = [api_url(u) for u in urls]
        self.user = user
        self.password = password
        self.domain = domain
        self.session_name = session_name
        self.timeout = timeout
        self.read_only = read_only
        self.continue_last_session = continue_last_session
        self.device_token = device_token
        """From this user's last login: lets later logins pass throttles others filled."""
        self.max_request_size = max_request_size
        self.sid: str | None = None
        self.session_uid: str | None = None
        self.unpublished = False
        """Whether edits were made since the last publish or discard."""
        self.left_behind: list[LeftBehind] = []
        self.logout_on_close = True
        self._index = 0
        self._socket = ApiSocket(
            timeout=timeout,
            max_request_size=max_request_size,
            reply_timeout=reply_timeout,
            on_wait=on_wait,
        )
        self._lock = asyncio.Lock()

    @classmethod
    def resume(
        cls,
        urls: list[str],
        *,
        sid: str,
        user: str,
        server: str | None = None,
        password: str | None = None,
        domain: str | None = None,
        session_uid: str | None = None,
        unpublished: bool = False,
        timeout: float = 10,
        device_token: str | None = None,
        reply_timeout: float = REPLY_TIMEOUT,
        on_wait: WaitListener | None = None,
    ) -> Client:
        """A client continuing an existing login (`sid`) on `server` (default: the first URL).

        Closing it does not log out. Without `password` it cannot log in elsewhere, so a
        lost server or login raises `ApiError` asking for a new login.
        """
        client = cls(
            urls, user=user, password=password, domain=domain, timeout=timeout,
            device_token=device_token, reply_timeout=reply_timeout, on_wait=on_wait,
        )  # fmt: skip
        if server is not None:
            wanted = api_url(server)
            if wanted not in client.urls:
                client.urls.insert(0, wanted)
            client._index = client.urls.index(wanted)
        client.sid = sid
        client.session_uid = session_uid
        client.unpublished = unpublished
        client.logout_on_close = False
        return client

    @property
    def server(self) -> str:
        """The URL of the server the client talks to now."""
        return self.urls[self._index]

    async def __aenter__(self) -> Client:
        if self.sid is None:
            await self.login()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ public calls

    async def login(self) -> dict[str, Any]:
        """Log in on the current server, or on the next ones that answer."""
        async with self._lock:
            return await self._login_somewhere(prefer=self._index, continuing=None)

    async def logout(self) -> None:
        """End the login; a draft with unpublished edits stays stored on the server."""
        async with self._lock:
            if self.sid is None:
                return
            if self.unpublished:
                log.warning(
                    "logging out of %s with unpublished changes in session %s; they stay there",
                    self.server, self.session_uid,
                )  # fmt: skip
            try:
                await self._request("logout", {})
            except (TransportFailure, ApiError) as exc:
                log.info("logout from %s failed: %s", self.server, exc)
            self.sid = None
            self.unpublished = False

    async def close(self) -> None:
        """Log out (unless resumed from a stored `sid`) and close the connection."""
        if self.logout_on_close and self.sid is not None:
            await self.logout()
        await self._drop_connection()

    async def call(self, command: str, **params: Any) -> dict[str, Any]:
        """Run one API command; `params` use the API's names (`ipv4-address`, ...).

        Python keywords cannot hold dashes: pass such parameters with `**{...}`.
        """
        if command == "login":
            return await self.login()
        if command == "logout":
            await self.logout()
            return {"message": "OK"}
        async with self._lock:
            if self.sid is None and command != "show-status":
                await self._login_somewhere(prefer=self._index, continuing=None)
            return await self._call_with_recovery(command, params)

    # ------------------------------------------------------------ recovery

    async def _call_with_recovery(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        renewed = False
        for _ in range(len(self.urls) + 1):
            try:
                return await self._request(command, params)
            except TransportFailure as failure:
                await self._recover_from_lost_server(command, failure)
            except ApiError as error:
                if error.code not in SESSION_GONE_CODES or renewed or self.password is None:
                    raise
                renewed = True
                await self._renew_login(error)
        raise ServerUnreachable(f"'{command}' failed on every server: {', '.join(self.urls)}")

    async def _recover_from_lost_server(self, command: str, failure: TransportFailure) -> None:
        lost, lost_session = self.server, self.session_uid
        edit_in_flight = failure.sent and (is_draft_edit(command) or command in ENDS_DRAFT)
        draft_at_risk = self.unpublished or edit_in_flight
        log.warning("lost server %s (%s); failing over", lost, failure)
        await self._drop_connection()
        try:
            await self._login_somewhere(prefer=self._index + 1, continuing=lost)
        except ApiError as error:
            if failure.sent and command in ENDS_DRAFT:
                self.unpublished = False
                more = f"; and {error.message}"
                raise ending_unknown(command, lost, lost_session, more) from None
            raise
        if failure.sent and command in ENDS_DRAFT:
            if self.server != lost:
                self.left_behind.append(LeftBehind(lost, lost_session))
            self.unpublished = False  # either done there, or left behind in `lost_session`
            raise ending_unknown(command, lost, lost_session, "", now_on=self.server)
        if self.server != lost and draft_at_risk:
            self._left_behind(lost, lost_session, command)
        if self.server == lost and edit_in_flight:
            raise OutcomeUnknown(
                f"the connection to {lost} broke before '{command}' replied; it may or may not "
                "have been applied: check show-changes",
                details={"server": lost, "command": command},
            )

    def _left_behind(self, lost: str, session: str | None, command: str) -> None:
        self._record_left_behind(
            lost,
            session,
            f"server {lost} was lost with unpublished changes in session {session}; they stay "
            f"there, unpublished. Now logged in on {self.server} in a new, empty session; "
            f"'{command}' was not run",
        )

    def _record_left_behind(self, server: str, session: str | None, message: str) -> None:
        self.left_behind.append(LeftBehind(server, session))
        self.unpublished = False
        log.warning("%s", message)
        raise SessionLeftBehind(
            message, details={"server": server, "session": session, "now-on": self.server}
        )

    async def _renew_login(self, error: ApiError) -> None:
        """Log in again on the same server, taking the stored draft over."""
        old_session = self.session_uid
        log.info("login on %s is gone (%s); logging in again", self.server, error.code)
        had_draft = self.unpublished
        await self._login_at(self._index, continuing=True)
        if had_draft and self.session_uid != old_session:
            self._record_left_behind(
                self.server,
                old_session,
                f"the login on {self.server} was gone and its unpublished session {old_session} "
                f"could not be taken over; now in session {self.session_uid}",
            )

    async def _login_somewhere(self, *, prefer: int, continuing: str | None) -> dict[str, Any]:
        """Log in on the first server, from `prefer` on, that answers; the server named
        `continuing` (the one just lost) is tried last and its stored draft taken over."""
        count = len(self.urls)
        order = [(prefer + k) % count for k in range(count)]
        if continuing is not None:
            order.sort(key=lambda i: self.urls[i] == continuing)
        failures: list[str] = []
        last_error: ApiError | None = None
        for index in order:
            try:
                return await self._login_at(index, continuing=self.urls[index] == continuing)
            except TransportFailure as failure:
                failures.append(f"{self.urls[index]}: {failure}")
            except ApiError as error:
                if error.code == "err_login_required":
                    raise
                failures.append(f"{self.urls[index]}: {error.code}")
                last_error = error
        if last_error is not None:
            raise last_error  # a server answered: its refusal says more than the rest
        raise ServerUnreachable(
            "no server could be logged in to: " + "; ".join(failures),
            details={"servers": list(self.urls)},
        )

    async def _login_at(self, index: int, *, continuing: bool) -> dict[str, Any]:
        if self.password is None:
            raise ApiError(
                "err_login_required",
                f"the login on {self.server} is no longer usable and no password is at hand: "
                "log in again",
            )
        if index != self._index:
            await self._drop_connection()
            self._index = index
        params: dict[str, Any] = {"user": self.user, "password": self.password}
        if self.domain is not None:
            params["domain"] = self.domain
        if self.session_name:
            params["session-name"] = self.session_name
        if self.read_only:
            params["read-only"] = True
        if continuing or self.continue_last_session:
            params["continue-last-session"] = True
        if self.device_token:
            params["device-token"] = self.device_token
        self.sid = None
        reply = await self._request("login", params)
        self.sid = reply["sid"]
        self.device_token = reply.get("device-token") or self.device_token
        self.session_uid = reply.get("uid")
        self.unpublished = bool(continuing or self.continue_last_session) and (
            await self._draft_has_changes()
        )
        log.info("logged in on %s as %s", self.server, self.user)
        return reply

    async def _draft_has_changes(self) -> bool:
        reply = await self._request("show-session", {})
        return bool(reply.get("changes"))

    # ------------------------------------------------------------ one request

    async def _request(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        result = await self._socket.request(self.server, command, params, self.sid)
        self._note_success(command)
        return result

    def _note_success(self, command: str) -> None:
        if is_draft_edit(command):
            self.unpublished = True
        elif command in ENDS_DRAFT:
            self.unpublished = False

    async def _drop_connection(self) -> None:
        await self._socket.close()
