"""Commands of logins and sessions: login, logout, keepalive, status, publish, discard,
tasks, sessions and their changes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import crdtmds
from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.commands.revisions import revision_changes
from crdtmds.api.params import (
    PAGING,
    boolean,
    details_level,
    integer,
    optional_string,
    page_of,
    required_string,
)
from crdtmds.api.replies import domain_ref, summary, timestamp
from crdtmds.app.logins import DEFAULT_SESSION_TIMEOUT, Login, LoginRequest
from crdtmds.core import model, names
from crdtmds.core.cluster import SUPERUSER
from crdtmds.core.domain_state import DomainState
from crdtmds.core.session import Session
from crdtmds.errors import CrdtmdsError, MissingParameter, NotImplementedHere, ObjectNotFound

log = logging.getLogger("crdtmds.api")

API_SERVER_VERSION = crdtmds.__version__
MAX_SESSION_TIMEOUT = 86400
LOGIN_PARAMS = (
    "user password domain session-name session-description session-timeout read-only"
    " continue-last-session device-token"
)


async def _login(call: Call) -> dict[str, Any]:
    params = call.params
    request = LoginRequest(
        user=required_string(params, "user"),
        password=required_string(params, "password"),
        domain=optional_string(params, "domain"),
        session_name=names.check_string(params.get("session-name", ""), "session-name", limit=128),
        session_description=names.check_string(
            params.get("session-description", ""), "session-description"
        ),
        timeout=integer(params, "session-timeout", DEFAULT_SESSION_TIMEOUT, 1, MAX_SESSION_TIMEOUT),
        read_only=boolean(params, "read-only"),
        continue_last_session=boolean(params, "continue-last-session"),
        device_token=params.get("device-token"),
    )
    logins = call.services.logins
    login = await logins.log_in(call.caller.source, request)
    call.caller.sid = login.sid
    reply = {
        "sid": login.sid,
        "uid": login.uid,
        "url": call.services.config.url,
        "session-timeout": int(login.timeout),
        # Always an object, as clients read it: a first login reports itself.
        "last-login-was-at": timestamp(login.previous_login_at or login.logged_in_at),
        "api-server-version": API_SERVER_VERSION,
        "read-only": login.read_only,
        "domain": domain_ref(login.domain) if login.domain else None,
        "server": call.services.config.name,
        # Lets this client's next logins skip throttles that attackers can fill.
        "device-token": logins.device_token(login.admin),
    }
    if login.warnings:  # a draft asked for with continue-last-session was lost
        reply["warnings"] = [{"message": message} for message in login.warnings]
    return reply


async def _logout(call: Call) -> dict[str, Any]:
    await call.services.logins.log_out(call.login)
    if call.caller.sid == call.login.sid:
        call.caller.sid = None
    return {"message": "OK"}


async def _keepalive(call: Call) -> dict[str, Any]:
    return {"message": "OK"}


async def _show_status(call: Call) -> dict[str, Any]:
    """Without a login only that the server is up; with one (or with a status token from
    a login on another server of the cluster) the whole view, plus a status token."""
    status = call.services.status
    if call.login_ is not None:
        return {**status.local_status(), "status-token": status.issue_token(call.login_.admin)}
    if status.token_opens(call.params.get("status-token")):
        return status.local_status()
    return status.health()


async def _publish(call: Call) -> dict[str, Any]:
    comments = names.check_string(call.params.get("comments", ""), "comments")
    uid = optional_string(call.params, "uid")
    if uid is not None and uid != call.login.uid:
        raise NotImplementedHere(
            "Publishing other than current session is not implemented", details={"uid": uid}
        )
    async with call.session_locked() as session:
        if not session.has_changes():
            revision = None
        else:
            revision = await call.services.sessions.publish(session, comments)
    details: dict[str, Any] = {"revision": revision}
    if revision is None:
        details["message"] = "nothing to publish"
    task = call.services.tasks.record(call.login.admin, "Publish operation", details)
    return {"task-id": task["task-id"], "revision": revision}


async def _discard(call: Call) -> dict[str, Any]:
    session = call.login.session
    if session is None:
        return {"message": "OK", "number-of-discarded-changes": 0}
    async with call.services.logins.session_lock(session.uid):
        count = await call.services.sessions.discard(session)
    return {"message": "OK", "number-of-discarded-changes": count}


async def _show_task(call: Call) -> dict[str, Any]:
    ids = call.params.get("task-id")
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise MissingParameter("'task-id' must name a task", details={"parameter": "task-id"})
    superuser = call.cluster.permission(call.login.admin, None) == SUPERUSER
    return {"tasks": [call.services.tasks.get(i, call.login.admin, superuser) for i in ids]}


def _session_reply(call: Call, session: Session) -> dict[str, Any]:
    attached = [x for x in call.services.logins.by_sid.values() if x.uid == session.uid]
    try:
        entry = call.cluster.domain_by_ref(session.domain.domain_id)
    except CrdtmdsError:
        entry = {"name": session.domain.name, "uid": None}
    return {
        "uid": session.uid,
        "type": "session",
        "name": session.name,
        "description": session.description,
        "user-name": session.admin,
        "domain": domain_ref(entry),
        "server": session.server,
        "changes": session.change_count(),
        "in-work": bool(attached),
        "state": "open",
        "connection-mode": "read write",
        "created-at": timestamp(session.created_at),
        "last-activity": timestamp(session.last_active),
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
        "domain": domain_ref(login.domain) if login.domain else None,
        "server": call.services.config.name,
        "changes": 0,
        "in-work": True,
        "state": "open",
        "connection-mode": "read only" if login.read_only else "read write",
        "created-at": timestamp(login.logged_in_at),
        "last-activity": timestamp(time.time()),
    }


async def _show_session(call: Call) -> dict[str, Any]:
    uid = optional_string(call.params, "uid")
    if uid is None or uid == call.login.uid:
        return _login_session_reply(call, call.login)
    session = call.services.sessions.by_uid.get(uid)
    if session is None:
        raise ObjectNotFound(f"session '{uid}' not found", details={"uid": uid})
    if session.admin != call.login.admin:
        call.require_superuser()
    return _session_reply(call, session)


async def _show_sessions(call: Call) -> dict[str, Any]:
    superuser = call.cluster.permission(call.login.admin, None) == SUPERUSER
    domain = call.login.domain
    sessions = [
        s
        for s in call.services.sessions.by_uid.values()
        if (superuser or s.admin == call.login.admin)
        and (domain is None or s.domain.domain_id == domain["document-id"])
    ]
    sessions.sort(key=lambda s: (s.created_at, s.uid))
    level = details_level(call.params)
    page, bounds = page_of(sessions, call.params)
    objects: list[Any] = [
        s.uid if level == "uid" else _session_reply(call, s) for s in page
    ]  # fmt: skip
    return {"objects": objects, **bounds}


async def _show_changes(call: Call) -> dict[str, Any]:
    """The login's unpublished changes; with `to-session` (a revision's uid or its
    session's), the changes that revision published."""
    call.domain_entry()
    session = call.login.session
    published = optional_string(call.params, "to-session")
    if published is not None:
        domain = call.services.documents.domain(call.domain_entry()["document-id"])
        await call.services.sessions.persister.recall_revision_changes(domain)
        changes, base, view = revision_changes(call, published)
    elif session is not None:
        changes, base, view = session.show_changes(), session.base, session.view
    else:
        changes, base, view = {}, None, None
    added, modified, deleted = (changes.get(k, []) for k in ("added", "modified", "deleted"))
    return {
        "session": published or call.login.uid,
        "added-objects": added,
        "modified-objects": modified,
        "deleted-objects": deleted,
        "total": len(added) + len(modified) + len(deleted),
        "objects-dictionary": _changes_dictionary(view, base, [*added, *modified, *deleted]),
    }


def _changes_dictionary(
    view: DomainState | None, base: DomainState | None, items: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`{uid, name, type}` of every object the changes refer to (members, rule columns),
    as `view` (the draft, or the revision) sees it, or as `base` did for objects it
    deleted."""
    if view is None or base is None:
        return []
    uids: dict[str, None] = {}
    for item in items:
        values = [item.get(f) for f in (*model.RULE_REFERENCE_FIELDS, "members")]
        for change in item.get("fields", {}).values():
            values += [change.get("old"), change.get("new")]
        for value in values:
            if isinstance(value, list):
                uids.update(dict.fromkeys(u for u in value if isinstance(u, str)))
    return [summary(view if uid in view.objects else base, uid) for uid in uids]


COMMANDS: dict[str, Command] = {
    "login": command(_login, Access.PUBLIC, LOGIN_PARAMS),
    "show-status": command(_show_status, Access.OPEN, "status-token"),
    "logout": command(_logout, Access.LOGGED_IN),
    "keepalive": command(_keepalive, Access.LOGGED_IN),
    "publish": command(_publish, Access.WRITE, "comments uid wait-for-task"),
    "discard": command(_discard, Access.LOGGED_IN),
    "show-task": command(_show_task, Access.LOGGED_IN, "task-id details-level"),
    "show-session": command(_show_session, Access.LOGGED_IN, "uid"),
    "show-sessions": command(_show_sessions, Access.LOGGED_IN, "", PAGING),
    "show-changes": command(_show_changes, Access.READ, "details-level to-session"),
}
