"""Commands of access rules and the rulebase."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.params import (
    PAGING,
    RULE_EXTRAS,
    WRITE_EXTRAS,
    boolean,
    check_ignore_flags,
    details_level,
    name_filter,
)
from crdtmds.api.replies import rule_number, rule_reply
from crdtmds.api.rulebase import rulebase_reply
from crdtmds.core import model
from crdtmds.core.session import Session
from crdtmds.errors import MissingParameter

log = logging.getLogger("crdtmds.api")


RULE_PARAMS = frozenset((*model.RULE_FIELDS, "layer", *WRITE_EXTRAS, *RULE_EXTRAS))
RULE_REF_PARAMS = frozenset(("uid", "name", "rule-number", "layer"))


async def _add_rule(call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        rule = session.add_rule(call.params)
    return _session_rule_reply(call, session, rule)


async def _set_rule(call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        rule = session.set_rule(call.params)
    return _session_rule_reply(call, session, rule)


async def _delete_rule(call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        session.delete_rule(call.params)
    return {"message": "OK"}


def _session_rule_reply(call: Call, session: Session, rule: Mapping[str, Any]) -> dict[str, Any]:
    layer = session.view.get_layer(rule.get("layer", call.params.get("layer")))
    number = rule_number(layer, rule["uid"])
    return rule_reply(rule, layer, number, call.domain_entry(), session.view)


async def _show_rule(call: Call) -> dict[str, Any]:
    level = details_level(call.params)
    state, entry = call.read_view()
    layer = state.get_layer(call.params.get("layer"))
    ref = next((call.params[k] for k in ("uid", "rule-number", "name") if k in call.params), None)
    if ref is None:
        raise MissingParameter("name the rule with 'uid', 'rule-number' or 'name'",
                               details={"parameter": "uid"})  # fmt: skip
    rule = state.get_rule(layer, ref)
    number = rule_number(layer, rule["uid"])
    return rule_reply(rule, layer, number, entry, state, full=level == "full")


async def _show_rulebase(call: Call) -> dict[str, Any]:
    level = details_level(call.params)
    dictionary = boolean(call.params, "use-object-dictionary", True)
    state, entry = call.read_view()
    layer = state.get_layer(call.params.get("uid", call.params.get("name")))
    options = (level, dictionary, name_filter(call.params))
    return rulebase_reply(state, layer, entry, call.params, options)


COMMANDS: dict[str, Command] = {
    "add-access-rule": command(_add_rule, Access.WRITE, "position", RULE_PARAMS),
    "set-access-rule": command(
        _set_rule, Access.WRITE, "new-name new-position", RULE_PARAMS, RULE_REF_PARAMS
    ),
    "delete-access-rule": command(_delete_rule, Access.WRITE, "", RULE_REF_PARAMS, WRITE_EXTRAS),
    "show-access-rule": command(_show_rule, Access.READ, "details-level domain", RULE_REF_PARAMS),
    "show-access-rulebase": command(
        _show_rulebase,
        Access.READ,
        "uid name filter use-object-dictionary domain package",
        PAGING,
    ),
}
