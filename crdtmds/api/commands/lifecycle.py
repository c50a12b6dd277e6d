"""Commands that change or remove administrators and domains: `set-administrator`,
`delete-administrator`, `show-administrator`, `set-domain`, `delete-domain`.

Who may do what: any administrator changes their own password, giving `old-password`;
everything else (another's password, `locked`, `superuser`, `domains`, deleting, and
every domain command here) needs a superuser. Nobody locks or deletes themselves, and
the last superuser who is not locked stays one (`ClusterAdmin.is_last_superuser`).
"""

from __future__ import annotations

import logging
from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.commands.cluster import domain_reply
from crdtmds.api.params import boolean, required_string
from crdtmds.core.cluster import SUPERUSER, public_administrator
from crdtmds.errors import (
    AuthenticationFailed,
    InvalidParameter,
    MissingParameter,
    ObjectNotFound,
    PermissionDenied,
    ValidationError,
)

log = logging.getLogger("crdtmds.api")

ADMIN_FIELDS = ("password", "locked", "superuser", "domains")


def _administrator_reply(entry: dict[str, Any]) -> dict[str, Any]:
    return {**public_administrator(entry), "locked": bool(entry.get("locked")),
            "type": "administrator"}  # fmt: skip


def _grants(params: dict[str, Any]) -> dict[str, str] | None:
    grants = params.get("domains")
    if grants is None:
        return None
    if not isinstance(grants, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in grants.items()
    ):
        raise InvalidParameter(
            "'domains' must map domain names to read-only or read-write",
            details={"parameter": "domains"},
        )
    return grants


async def _check_own_password_change(call: Call) -> None:
    """Changing one's own password needs the current one, whoever one is."""
    old = call.params.get("old-password")
    if not isinstance(old, str) or not old:
        raise MissingParameter(
            "changing your own password needs 'old-password'",
            details={"parameter": "old-password"},
        )
    try:
        await call.services.logins.check_password(call.caller.source, call.login.admin, old)
    except AuthenticationFailed:
        raise AuthenticationFailed("the old password is wrong") from None


async def _set_administrator(call: Call) -> dict[str, Any]:
    name = required_string(call.params, "name")
    me = call.login.admin
    given = {key for key in ADMIN_FIELDS if key in call.params}
    if not given:
        raise MissingParameter(
            f"give what to change: {', '.join(ADMIN_FIELDS)}", details={"parameters": ADMIN_FIELDS}
        )
    own_password = name == me and "password" in given
    if "old-password" in call.params and not own_password:
        raise InvalidParameter("'old-password' goes with a change of your own password")
    if given - {"password"} or name != me:
        call.require_superuser()
    if name == me and call.params.get("locked") is True:
        raise ValidationError("you cannot lock yourself out", details={"name": name})
    if own_password:
        await _check_own_password_change(call)
    locked = boolean(call.params, "locked") if "locked" in given else None
    superuser = boolean(call.params, "superuser") if "superuser" in given else None
    password = required_string(call.params, "password") if "password" in given else None
    entry = await call.services.cluster_admin.set_administrator(
        name, password=password, locked=locked, superuser=superuser, domains=_grants(call.params)
    )
    log.info("%r changed %s of administrator %r", me, ", ".join(sorted(given)), name)
    return _administrator_reply(entry)


async def _delete_administrator(call: Call) -> dict[str, Any]:
    name = required_string(call.params, "name")
    if name == call.login.admin:
        raise ValidationError("you cannot delete yourself", details={"name": name})
    await call.services.cluster_admin.delete_administrator(name)
    log.info("%r deleted administrator %r", call.login.admin, name)
    return {"message": "OK"}


async def _show_administrator(call: Call) -> dict[str, Any]:
    name = required_string(call.params, "name")
    if name != call.login.admin and call.cluster.permission(call.login.admin, None) != SUPERUSER:
        raise PermissionDenied("only a superuser reads other administrators")
    entry = call.cluster.administrators().get(name)
    if entry is None:
        raise ObjectNotFound(f"administrator '{name}' not found", details={"name": name})
    return _administrator_reply(entry)


def _domain_ref(call: Call) -> str:
    ref = call.params.get("uid", call.params.get("name"))
    if not isinstance(ref, str) or not ref:
        raise MissingParameter("give the domain's 'name' or 'uid'", details={"parameter": "name"})
    return ref


async def _set_domain(call: Call) -> dict[str, Any]:
    ref = _domain_ref(call)
    new_name = required_string(call.params, "new-name")
    entry = await call.services.cluster_admin.rename_domain(ref, new_name)
    log.info("%r renamed domain %r to %r", call.login.admin, ref, new_name)
    return domain_reply(call, entry)


async def _delete_domain(call: Call) -> dict[str, Any]:
    ref = _domain_ref(call)
    tombstone = await call.services.cluster_admin.delete_domain(ref, deleted_by=call.login.admin)
    log.info("%r deleted domain %r (%s)", call.login.admin, tombstone["name"],
             tombstone["document-id"])  # fmt: skip
    return {"message": "OK"}


COMMANDS: dict[str, Command] = {
    "set-administrator": command(
        _set_administrator, Access.LOGGED_IN, "name password old-password locked superuser domains"
    ),
    "delete-administrator": command(_delete_administrator, Access.SUPERUSER, "name"),
    "show-administrator": command(_show_administrator, Access.LOGGED_IN, "name"),
    "set-domain": command(_set_domain, Access.SUPERUSER, "name uid new-name"),
    "delete-domain": command(_delete_domain, Access.SUPERUSER, "name uid"),
}
