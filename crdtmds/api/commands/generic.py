"""Commands over objects of any type: `show-object`, `show-objects`, `equals` (the
Ansible modules' idempotency check), and `show-api-versions`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.commands.objects import object_params
from crdtmds.api.commands.sessions import API_SERVER_VERSION
from crdtmds.api.params import (
    PAGING,
    RULE_EXTRAS,
    WRITE_EXTRAS,
    details_level,
    name_filter,
    optional_string,
    page_of,
    required_string,
)
from crdtmds.api.replies import (
    BUILTINS,
    object_reply,
    rule_number,
    rule_reply,
    section_reply,
    summary,
)
from crdtmds.core import model, sections
from crdtmds.core.domain_state import DomainState
from crdtmds.errors import CrdtmdsError, InvalidParameter, MissingParameter, ObjectNotFound

SET_LIKE = ("members", "tags", *model.RULE_REFERENCE_FIELDS)
"""Fields that hold sets: their order does not make two records differ."""
EQUALS_IGNORED = frozenset(
    (*WRITE_EXTRAS, *RULE_EXTRAS, "search-entire-rulebase", "position", "new-position")
)
"""Keys the clients send to `equals` that say nothing about the object's content."""


async def _show_api_versions(call: Call) -> dict[str, Any]:
    return {"current-version": API_SERVER_VERSION, "supported-versions": [API_SERVER_VERSION]}


async def _show_object(call: Call) -> dict[str, Any]:
    level = details_level(call.params)
    uid = required_string(call.params, "uid")
    state, entry = call.read_view()
    if uid in BUILTINS:
        return {"object": summary(state, uid)}
    record = state.objects.get(uid)
    if record is not None:
        shown = summary(state, uid) if level == "uid" else object_reply(record, state, entry)
        return {"object": shown}
    for layer in state.layers.values():
        if uid in layer.rules:
            number = rule_number(layer, uid)
            return {"object": rule_reply(layer.rules[uid], layer, number, entry, state)}
        if uid in layer.sections:
            return {"object": section_reply(layer.sections[uid], layer, entry)}
        if uid == layer.uid:
            return {"object": {"uid": uid, "name": layer.name, "type": "access-layer"}}
    raise ObjectNotFound(f"Requested object [{uid}] not found", details={"uid": uid})


async def _show_objects(call: Call) -> dict[str, Any]:
    level = details_level(call.params)
    kind = optional_string(call.params, "type", "object")
    if kind != "object" and kind not in model.OBJECT_TYPES:
        raise InvalidParameter(
            f"'type' must be 'object' or one of {', '.join(sorted(model.OBJECT_TYPES))}",
            details={"parameter": "type"},
        )
    state, entry = call.read_view()
    wanted = name_filter(call.params)
    found = sorted(
        (r for r in state.objects.values() if kind in ("object", r.get("type")) and wanted(r)),
        key=lambda r: (str(r.get("name", "")), r["uid"]),
    )
    page, bounds = page_of(found, call.params)
    objects: list[Any] = [
        summary(state, r["uid"]) if level == "uid" else object_reply(r, state, entry) for r in page
    ]
    return {"objects": objects, **bounds}


async def _equals(call: Call) -> dict[str, Any]:
    kind = required_string(call.params, "type")
    given = call.params.get("params", {})
    if not isinstance(given, Mapping):
        raise InvalidParameter("'params' must be an object", details={"parameter": "params"})
    params = {k: v for k, v in given.items() if k not in EQUALS_IGNORED}
    state, _ = call.read_view()
    return {"equals": equals(state, kind, params)}


def equals(state: DomainState, kind: str, params: Mapping[str, Any]) -> bool:
    """Whether the object `params` name already has every value `params` give. Raises
    `ObjectNotFound` when there is no such object; values it cannot hold (an unknown
    field, a reference to nothing) make it unequal, so that the set that follows says
    what is wrong."""
    ref = next((params[k] for k in ("uid", "name") if k in params), None)
    if kind in model.OBJECT_TYPES:
        current = state.get_object(ref, kind)
        if set(params) - object_params(kind, "set"):
            return False
        return _same(current, lambda: model.build_object(
            kind, params, state.find_object, existing=current))  # fmt: skip
    if kind not in ("access-rule", "access-section"):
        raise InvalidParameter(f"'equals' does not compare objects of type '{kind}'",
                               details={"parameter": "type"})  # fmt: skip
    layer = state.get_layer(params.get("layer"))
    if kind == "access-section":
        section = sections.find_section(layer, ref)
        return _same(section, lambda: sections.build_section(params, section))
    if "rule-number" in params:
        ref = params["rule-number"]
    if ref is None:
        raise MissingParameter("name the rule with 'uid', 'name' or 'rule-number'",
                               details={"parameter": "name"})  # fmt: skip
    rule = state.get_rule(layer, ref)
    fields = {*model.RULE_FIELDS, "uid", "new-name", "layer", "rule-number"}
    if set(params) - fields:
        return False
    return _same(rule, lambda: model.build_rule(params, state.find_object, existing=rule))


def _same(current: Mapping[str, Any], build: Any) -> bool:
    try:
        wanted = build()
    except CrdtmdsError:
        return False
    return _normalized(wanted) == _normalized(current)


def _normalized(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: sorted(v) if k in SET_LIKE and isinstance(v, list) else v for k, v in record.items()}


COMMANDS: dict[str, Command] = {
    "show-api-versions": command(_show_api_versions, Access.PUBLIC),
    "show-object": command(_show_object, Access.READ, "uid details-level domain"),
    "show-objects": command(_show_objects, Access.READ, "type filter domain", PAGING),
    "equals": command(_equals, Access.READ, "type params domain", WRITE_EXTRAS),
}
