"""The shapes of replies: timestamps, references to domains and objects, objects,
rules and sections as the Check Point Management API shows them.

Check Point shows a rule's action, track type, install-on, time, content and VPN as
references to predefined objects (`{uid, name, type}`). crdtmds stores the action and
the track as their names and has none of the others; the predefined objects below give
them stable uids, so replies and objects dictionaries read like Check Point's.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from crdtmds.core import model, names
from crdtmds.core.domain_state import DomainState, Layer

ANY_SUMMARY = {"uid": model.ANY_UID, "name": names.ANY_NAME, "type": "CpmiAnyObject"}
_NAMESPACE = uuid.UUID("5e0c7a52-1d3f-4c55-9a0e-3b1c2f6f4d10")


def _builtin(kind: str, name: str) -> dict[str, Any]:
    return {"uid": str(uuid.uuid5(_NAMESPACE, f"{kind}:{name}")), "name": name, "type": kind}


ACTIONS = {name: _builtin("RulebaseAction", name) for name in model.ACTIONS}
TRACKS = {name: _builtin("Track", name) for name in model.TRACKS}
POLICY_TARGETS = _builtin("Global", "Policy Targets")
BUILTINS: dict[str, dict[str, Any]] = {
    item["uid"]: item for item in (ANY_SUMMARY, POLICY_TARGETS, *ACTIONS.values(), *TRACKS.values())
}
"""Predefined objects a reply refers to, by uid."""

DEFAULT_REFERENCES = {"install-on": POLICY_TARGETS, "time": ANY_SUMMARY, "content": ANY_SUMMARY,
                      "vpn": ANY_SUMMARY}  # fmt: skip
"""Rule columns crdtmds does not keep, shown with the value every rule has here."""


def timestamp(seconds: float) -> dict[str, Any]:
    moment = datetime.fromtimestamp(seconds, UTC)
    return {"posix": int(seconds * 1000), "iso-8601": moment.isoformat(timespec="seconds")}


def domain_ref(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": entry.get("name"), "uid": entry.get("uid"), "domain-type": "domain"}


def summary(state: DomainState, uid: str) -> dict[str, Any]:
    """`{uid, name, type}` of a referenced object (predefined ones, or a missing one,
    included)."""
    if uid in BUILTINS:
        return dict(BUILTINS[uid])
    record = state.objects.get(uid)
    if record is None:
        return {"uid": uid, "name": None, "type": "missing"}
    return {"uid": uid, "name": record.get("name"), "type": record.get("type")}


def tag_ref(name: str) -> dict[str, Any]:
    """A tag as Check Point shows it; crdtmds keeps tags as names, with a uid made from
    the name so that it is the same everywhere."""
    return {"uid": str(uuid.uuid5(_NAMESPACE, f"tag:{name}")), "name": name, "type": "tag"}


def object_reply(
    record: Mapping[str, Any], state: DomainState, entry: Mapping[str, Any]
) -> dict[str, Any]:
    reply = {**record, "domain": domain_ref(entry)}
    reply["tags"] = [tag_ref(t) for t in record.get("tags", []) if isinstance(t, str)]
    if record.get("type") == "group":
        reply["members"] = [summary(state, uid) for uid in record.get("members", [])]
    if record.get("type") == "network" and isinstance(record.get("mask-length4"), int):
        mask = ipaddress.ip_network(f"0.0.0.0/{record['mask-length4']}").netmask
        reply["subnet-mask"] = str(mask)
    if record.get("type") == "network":
        reply["broadcast"] = "allow"
    return reply


def rule_reference_uids(rule: Mapping[str, Any]) -> list[str]:
    """Every uid a rule reply refers to: its columns, action, track and the defaults."""
    uids = [uid for column in model.RULE_REFERENCE_FIELDS for uid in rule.get(column, [])]
    uids.append(ACTIONS.get(rule.get("action", ""), ACTIONS["Drop"])["uid"])
    uids.append(TRACKS.get(rule.get("track", ""), TRACKS["None"])["uid"])
    uids.extend(item["uid"] for item in DEFAULT_REFERENCES.values())
    return uids


def rule_reply(
    rule: Mapping[str, Any],
    layer: Layer,
    number: int,
    entry: Mapping[str, Any],
    state: DomainState | None = None,
    *,
    full: bool = False,
) -> dict[str, Any]:
    """A rule as Check Point shows it. With `state`, references are `{uid, name, type}`
    (`full`: whole objects); without, uids, as with an objects dictionary."""

    def ref(uid: str) -> Any:
        if state is None:
            return uid
        record = state.objects.get(uid) if full else None
        return object_reply(record, state, entry) if record else summary(state, uid)

    action = ACTIONS.get(rule.get("action", ""), ACTIONS["Drop"])
    track = TRACKS.get(rule.get("track", ""), TRACKS["None"])
    reply = {
        **rule,
        "type": "access-rule",
        "layer": layer.uid,
        "rule-number": number,
        "domain": domain_ref(entry),
        "action": ref(action["uid"]),
        "track": {
            "type": ref(track["uid"]), "per-packet": False,
            "per-connection": track["name"] == "Log", "accounting": False,
            "enable-firewall-session": False, "alert": "none",
        },
        "content-direction": "any",
    }  # fmt: skip
    for column in model.RULE_REFERENCE_FIELDS:
        reply[column] = [ref(uid) for uid in rule.get(column, [])]
        reply[f"{column}-negate"] = False
    for column, default in DEFAULT_REFERENCES.items():
        reply[column] = [ref(default["uid"])]
    reply["content-negate"] = False
    return reply


def objects_dictionary(
    state: DomainState, entry: Mapping[str, Any], uids: Iterable[str]
) -> list[dict[str, Any]]:
    """The objects a reply refers to by uid, each once, in first-use order."""
    objects = []
    for uid in dict.fromkeys(uids):
        record = state.objects.get(uid)
        objects.append(object_reply(record, state, entry) if record else summary(state, uid))
    return objects


def section_reply(
    section: Mapping[str, Any], layer: Layer, entry: Mapping[str, Any]
) -> dict[str, Any]:
    return {**section, "type": "access-section", "layer": layer.uid, "domain": domain_ref(entry)}


def rule_number(layer: Layer, uid: str) -> int:
    return layer.ordered_uids().index(uid) + 1
