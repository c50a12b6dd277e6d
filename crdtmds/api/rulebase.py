"""`show-access-rulebase` and `show-layer-structure` replies: a layer's rules, paged by
rule, inside the sections that hold them, as Check Point shows them.

A page is a range of rules (`offset`, `limit` up to 500; `limit: 0` gives the total
only). Rules before the first section stand at the top level; each section with rules in
the page is an entry `{type: access-section, uid, name, from, to, rulebase: [rules]}`,
`from`/`to` being the numbers of its rules in that page. An empty section has no
`from`/`to` and shows in the page that reaches its place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from crdtmds.api.params import DEFAULT_LIMIT, MAX_LIMIT, integer
from crdtmds.api.replies import objects_dictionary, rule_reference_uids, rule_reply
from crdtmds.core import sections
from crdtmds.core.domain_state import DomainState, Layer

Numbered = tuple[int, str]


def rulebase_reply(
    state: DomainState,
    layer: Layer,
    entry: Mapping[str, Any],
    params: Mapping[str, Any],
    options: tuple[str, bool, Callable[[Mapping[str, Any]], bool]],
) -> dict[str, Any]:
    """The reply; `options` are the details level, whether to use an objects dictionary,
    and the rule filter."""
    level, dictionary, wanted = options
    limit = integer(params, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
    offset = integer(params, "offset", 0, 0)
    groups = sections.groups(layer)
    numbered = [pair for g in groups for pair in g.rules if wanted(layer.rules[pair[1]])]
    start = min(offset, len(numbered))
    page = numbered[start : start + limit]
    in_page = {uid for _, uid in page}
    filtered = len(numbered) != sum(len(g.rules) for g in groups)

    def rule(pair: Numbered) -> dict[str, Any]:
        number, uid = pair
        if level == "uid":
            return {"uid": uid, "type": "access-rule", "rule-number": number}
        expand = None if dictionary else state
        return rule_reply(layer.rules[uid], layer, number, entry, expand, full=level == "full")

    items: list[dict[str, Any]] = []
    before = 0  # rules of the filtered list before the current group
    for group in groups:
        mine = [pair for pair in group.rules if pair[1] in in_page]
        shown = [pair for pair in group.rules if wanted(layer.rules[pair[1]])]
        if group.section is None:
            items.extend(rule(pair) for pair in mine)
        elif mine:
            items.append(_section_entry(layer, group.section, [rule(p) for p in mine], mine))
        elif not (group.rules or filtered) and _empty_shown(before, start, limit, len(numbered)):
            items.append(_section_entry(layer, group.section, [], []))
        before += len(shown)
    reply: dict[str, Any] = {
        "uid": layer.uid,
        "name": layer.name,
        "from": start + 1 if page else start,
        "to": start + len(page),
        "total": len(numbered),
        "rulebase": items,
    }
    if dictionary:
        uids = [u for _, uid in page for u in rule_reference_uids(layer.rules[uid])]
        reply["objects-dictionary"] = objects_dictionary(state, entry, uids)
    return reply


def _empty_shown(before: int, start: int, limit: int, total: int) -> bool:
    """Whether an empty section with `before` rules ahead of it belongs to this page."""
    end = min(start + limit, total)
    return limit > 0 and (start <= before < end or before == end == total)


def _section_entry(
    layer: Layer, uid: str, rules: list[dict[str, Any]], numbered: list[Numbered]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "uid": uid,
        "name": layer.sections[uid].get("name", ""),
        "type": "access-section",
    }
    if numbered:
        entry["from"], entry["to"] = numbered[0][0], numbered[-1][0]
    entry["rulebase"] = rules
    return entry


def layer_structure(layer: Layer) -> dict[str, Any]:
    """`show-layer-structure`: the layer's sections and the rule numbers each holds."""
    children = []
    total = 0
    for group in sections.groups(layer):
        total += len(group.rules)
        if group.section is None:
            continue
        child: dict[str, Any] = {
            "uid": group.section,
            "name": layer.sections[group.section].get("name", ""),
            "type": "access-section",
        }
        if group.rules:
            child["from-rule"], child["to-rule"] = group.rules[0][0], group.rules[-1][0]
        child["children"] = []
        children.append(child)
    root: dict[str, Any] = {"uid": layer.uid, "name": layer.name, "type": "access-section"}
    if total:
        root["from-rule"], root["to-rule"] = 1, total
    root["children"] = children
    return {"uid": layer.uid, "name": layer.name, "type": "access-layer", "root-section": root}
