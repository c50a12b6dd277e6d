"""Commands of network objects and services: add, set, delete, show one, show many, and
where an object is used."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.params import (
    PAGING,
    WRITE_EXTRAS,
    check_ignore_flags,
    details_level,
    name_filter,
    page_of,
)
from crdtmds.api.replies import domain_ref, object_reply, summary
from crdtmds.core import model
from crdtmds.errors import MissingParameter

log = logging.getLogger("crdtmds.api")


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
    "network": ("subnet", "mask-length", "subnet-mask", "broadcast"),
    "address-range": ("ip-address-first", "ip-address-last"),
}
"""Generic parameter names the model accepts besides its stored fields."""


def object_params(obj_type: str, verb: str) -> frozenset[str]:
    fields = (*model.COMMON_FIELDS, *model.TYPE_FIELDS[obj_type], *ALIASES.get(obj_type, ()))
    if verb == "add":
        return frozenset((*fields, *WRITE_EXTRAS))
    if verb == "set":
        return frozenset((*fields, "uid", "new-name", *WRITE_EXTRAS))
    if verb == "delete":
        return frozenset(("uid", "name", *WRITE_EXTRAS))
    return frozenset(("uid", "name", "details-level", "domain"))


async def _add_object(obj_type: str, call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        record = session.add_object(obj_type, call.params)
    return object_reply(record, session.view, call.domain_entry())


async def _set_object(obj_type: str, call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        record = session.set_object(obj_type, call.params)
    return object_reply(record, session.view, call.domain_entry())


async def _delete_object(obj_type: str, call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        session.delete_object(obj_type, call.params)
    return {"message": "OK"}


async def _show_object(obj_type: str, call: Call) -> dict[str, Any]:
    details_level(call.params)
    state, entry = call.read_view()
    ref = call.params.get("uid", call.params.get("name"))
    if ref is None:
        raise MissingParameter("name the object with 'uid' or 'name'",
                               details={"parameter": "name"})  # fmt: skip
    return object_reply(state.get_object(ref, obj_type), state, entry)


async def _show_objects(obj_type: str, call: Call) -> dict[str, Any]:
    level = details_level(call.params)
    state, entry = call.read_view()
    wanted = name_filter(call.params)
    found = [r for r in state.objects_of_type(obj_type) if wanted(r)]
    page, bounds = page_of(found, call.params)
    objects: list[Any] = [
        r["uid"] if level == "uid" else object_reply(r, state, entry) for r in page
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
            objects.append(summary(state, use["uid"]))
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
        "object": summary(state, target["uid"]),
        "domain": domain_ref(entry),
        "used-directly": {
            "total": len(objects) + len(rules),
            "objects": objects,
            "access-control-rules": list(rules.values()),
        },
    }


def _object_commands() -> dict[str, Command]:
    commands = {"where-used": command(_where_used, Access.READ, "uid name details-level domain")}
    read, write = Access.READ, Access.WRITE
    for obj_type, plural in PLURALS.items():
        params = partial(object_params, obj_type)
        commands[f"add-{obj_type}"] = command(
            partial(_add_object, obj_type), write, "", params("add")
        )
        commands[f"set-{obj_type}"] = command(
            partial(_set_object, obj_type), write, "", params("set")
        )
        commands[f"delete-{obj_type}"] = command(
            partial(_delete_object, obj_type), write, "", params("delete")
        )
        commands[f"show-{obj_type}"] = command(
            partial(_show_object, obj_type), read, "", params("show")
        )
        commands[f"show-{plural}"] = command(
            partial(_show_objects, obj_type), read, "filter domain", PAGING
        )
    return commands


COMMANDS: dict[str, Command] = _object_commands()
