"""The shapes of replies: timestamps, references to domains and objects, objects and
rules as the Check Point Management API shows them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from crdtmds.core import model, names
from crdtmds.core.domain_state import DomainState, Layer

ANY_SUMMARY = {"uid": model.ANY_UID, "name": names.ANY_NAME, "type": "CpmiAnyObject"}


def timestamp(seconds: float) -> dict[str, Any]:
    moment = datetime.fromtimestamp(seconds, UTC)
    return {"posix": int(seconds * 1000), "iso-8601": moment.isoformat(timespec="seconds")}


def domain_ref(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": entry.get("name"), "uid": entry.get("uid"), "domain-type": "domain"}


def summary(state: DomainState, uid: str) -> dict[str, Any]:
    """`{uid, name, type}` of a referenced object ("Any", or a missing one, included)."""
    if uid == model.ANY_UID:
        return dict(ANY_SUMMARY)
    record = state.objects.get(uid)
    if record is None:
        return {"uid": uid, "name": None, "type": "missing"}
    return {"uid": uid, "name": record.get("name"), "type": record.get("type")}


def object_reply(
    record: Mapping[str, Any], state: DomainState, entry: Mapping[str, Any]
) -> dict[str, Any]:
    reply = {**record, "domain": domain_ref(entry)}
    if record.get("type") == "group":
        reply["members"] = [summary(state, uid) for uid in record.get("members", [])]
    return reply


def rule_reply(
    rule: Mapping[str, Any],
    layer: Layer,
    number: int,
    entry: Mapping[str, Any],
    state: DomainState | None = None,
) -> dict[str, Any]:
    """A rule as replied; with `state`, its references expanded to `{uid, name, type}`."""
    reply = {
        **rule,
        "type": "access-rule",
        "layer": layer.uid,
        "rule-number": number,
        "domain": domain_ref(entry),
    }
    if state is not None:
        for column in model.RULE_REFERENCE_FIELDS:
            reply[column] = [summary(state, uid) for uid in rule.get(column, [])]
    return reply


def rule_number(layer: Layer, uid: str) -> int:
    return layer.ordered_uids().index(uid) + 1
