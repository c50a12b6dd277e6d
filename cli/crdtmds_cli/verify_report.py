"""The rows of `crdtmds verify`: each problem with names and rule numbers, not bare uids.

`verify-policy` names problems by uid; the objects and rules it names are looked up in
the domain's lists and rulebases, and a uid that names nothing any more is shown as a
deleted object.
"""

from __future__ import annotations

from typing import Any

from crdtmds.client import Client
from crdtmds_cli.calls import all_pages

LISTS = ("show-hosts", "show-networks", "show-address-ranges", "show-groups",
         "show-services-tcp", "show-services-udp")  # fmt: skip


async def problem_names(
    client: Client, problems: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, str]:
    """uid -> how to show it: `host web1`, `rule 3 'allow web' (Network)`."""
    names: dict[str, str] = {}
    for command in LISTS:
        listed = await all_pages(client, command, "objects", None, **extra)
        for obj in listed["objects"]:
            names[obj["uid"]] = f"{obj.get('type')} {obj.get('name')}"
    layers = {
        p["holder"].get("layer")
        for p in problems
        if isinstance(p.get("holder"), dict) and p["holder"].get("type") == "access-rule"
    }
    for layer in sorted(filter(None, layers)):
        rules = await all_pages(client, "show-access-rulebase", "rulebase", None,
                                name=layer, **extra)  # fmt: skip
        for rule in rules["rulebase"]:
            label = f" '{rule['name']}'" if rule.get("name") else ""
            names[rule["uid"]] = f"rule {rule['rule-number']}{label} ({layer})"
    return names


def problem_row(problem: dict[str, Any], names: dict[str, str]) -> list[str]:
    """Problem, name or holder, details: one row of the table."""
    kind = str(problem.get("type"))

    def shown(uid: str) -> str:
        return names.get(uid, f"deleted object {uid}")

    if kind in ("duplicate-name", "duplicate-layer-name"):
        uids = problem.get("uids", [])
        holders = [f"{names.get(u, 'layer').split(' ')[0]} {u}" for u in uids]
        return [kind, str(problem.get("name")), f"{len(uids)} objects: " + ", ".join(holders)]
    if kind == "dangling-reference":
        holder = problem.get("holder") or {}
        where = names.get(holder.get("uid", ""))
        if where is None:
            where = f"{holder.get('type')} {holder.get('name') or holder.get('uid')}"
        missing = shown(str(problem.get("missing")))
        return [kind, where, f"{problem.get('field')}: {missing}"]
    if kind == "group-cycle":
        members = [shown(u) for u in problem.get("uids", [])]
        return [kind, members[0] if members else "", "contains itself via " + ", ".join(members)]
    return [kind, str(problem.get("name") or ""), str(problem.get("uids") or "")]
