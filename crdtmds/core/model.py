"""The policy schema and its validation: pure functions over plain data, no I/O.

Field names follow the Check Point Management API. Every function here either returns
a normalized record or raises a `CrdtmdsError` subclass with a stable code; none of them
touches a document, so a rejected edit never writes anything.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from crdtmds.core import names
from crdtmds.errors import InvalidParameter, MissingParameter, ValidationError

ANY_UID = "97aeb369-9aea-11d5-bd16-0090272ccb30"
"""The uid Check Point gives its predefined "Any" object; rules may use it in any column."""

DEFAULT_LAYER_NAME = "Network"

NETWORK_TYPES = frozenset({"host", "network", "address-range", "group"})
SERVICE_TYPES = frozenset({"service-tcp", "service-udp"})
OBJECT_TYPES = NETWORK_TYPES | SERVICE_TYPES

ACTIONS = ("Accept", "Drop", "Reject")
TRACKS = ("None", "Log")
COLORS = frozenset(
    {
        "aquamarine", "black", "blue", "crete blue", "burlywood", "cyan", "dark green",
        "khaki", "orchid", "dark orange", "dark sea green", "pink", "turquoise", "dark blue",
        "firebrick", "brown", "forest green", "gold", "dark gold", "gray", "dark gray",
        "light green", "lemon chiffon", "coral", "sea green", "sky blue", "magenta", "purple",
        "slate blue", "violet red", "navy blue", "olive", "orange", "red", "sienna", "yellow",
    }
)  # fmt: skip

COMMON_FIELDS = ("name", "comments", "color", "tags")
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "host": ("ipv4-address", "ipv6-address"),
    "network": ("subnet4", "mask-length4", "subnet6", "mask-length6"),
    "address-range": (
        "ipv4-address-first",
        "ipv4-address-last",
        "ipv6-address-first",
        "ipv6-address-last",
    ),
    "group": ("members",),
    "service-tcp": ("port",),
    "service-udp": ("port",),
}
RULE_FIELDS = (
    "name",
    "source",
    "destination",
    "service",
    "action",
    "track",
    "enabled",
    "comments",
)
RULE_REFERENCE_FIELDS = ("source", "destination", "service")
POSITION_PLACES = ("above", "below", "top", "bottom")

_PORT_RE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?$")

Resolver = Callable[[str], Mapping[str, Any] | None]
"""Looks an object up by uid or name, as the editing session sees the domain."""


def new_uid() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------- scalar checks


def require(params: Mapping[str, Any], key: str) -> Any:
    if key not in params or params[key] is None:
        raise MissingParameter(f"missing required parameter '{key}'", details={"parameter": key})
    return params[key]


def check_bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameter(f"'{field}' must be true or false", details={"parameter": field})
    return value


def check_color(value: Any) -> str:
    color = names.check_string(value, "color").lower()
    if color not in COLORS:
        raise ValidationError(f"unknown color '{value}'", details={"parameter": "color"})
    return color


def check_tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidParameter("'tags' must be a list of strings", details={"parameter": "tags"})
    return sorted({names.check_name(tag, "tags") for tag in value})


def check_ip(value: Any, field: str, version: int | None = None) -> str:
    text = names.check_string(value, field)
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValidationError(
            f"'{field}' is not a valid IP address: {text!r}", details={"parameter": field}
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        # A zone index names an interface of one machine; it means nothing in a policy.
        raise ValidationError(
            f"'{field}' must not carry a zone index: {text!r}", details={"parameter": field}
        )
    if version is not None and address.version != version:
        raise ValidationError(
            f"'{field}' must be an IPv{version} address: {text!r}", details={"parameter": field}
        )
    return str(address)


def check_mask_length(value: Any, field: str, version: int) -> int:
    limit = 32 if version == 4 else 128
    if _is_ascii_number(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValidationError(
            f"'{field}' must be an integer from 0 to {limit}", details={"parameter": field}
        )
    return value


def _is_ascii_number(value: Any) -> bool:
    # str.isdigit() also accepts digits int() cannot parse, such as "²".
    return isinstance(value, str) and value.isascii() and value.isdigit()


def check_port(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = names.check_string(value, "port").strip()
    match = _PORT_RE.match(text)
    if not match:
        raise ValidationError(
            f"'port' must be a number or a range like 8080-8090, not {text!r}",
            details={"parameter": "port"},
        )
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ValidationError("'port' must be between 1 and 65535", details={"parameter": "port"})
    if low > high:
        raise ValidationError(f"port range {text!r} is reversed", details={"parameter": "port"})
    return str(low) if low == high else f"{low}-{high}"


# ---------------------------------------------------------------- objects


def build_object(
    obj_type: str,
    params: Mapping[str, Any],
    resolve: Resolver,
    *,
    existing: Mapping[str, Any] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """A validated object record of `obj_type` from API parameters.

    With `existing`, the parameters modify that record (`set-*`): only the given fields
    change, `new-name` renames. Without it, a new record (`add-*`) with a fresh uid.
    References (group members) are resolved through `resolve` and stored as uids.
    """
    if obj_type not in OBJECT_TYPES:
        raise InvalidParameter(f"unknown object type '{obj_type}'")
    record: dict[str, Any] = dict(existing) if existing else _new_record(obj_type, uid)
    if existing is None:
        record["name"] = names.check_name(require(params, "name"))
    elif "new-name" in params:
        record["name"] = names.check_name(params["new-name"], "new-name")
    _apply_common_fields(record, params)
    _TYPE_BUILDERS[obj_type](record, params, resolve)
    return record


def _new_record(obj_type: str, uid: str | None) -> dict[str, Any]:
    return {
        "uid": uid or new_uid(),
        "type": obj_type,
        "name": "",
        "comments": "",
        "color": "black",
        "tags": [],
    }


def _apply_common_fields(record: dict[str, Any], params: Mapping[str, Any]) -> None:
    if "comments" in params:
        record["comments"] = names.check_string(params["comments"], "comments")
    if "color" in params:
        record["color"] = check_color(params["color"])
    if "tags" in params:
        tags = params["tags"]
        if isinstance(tags, Mapping):
            tags = _edited_list(record.get("tags", []), tags, "tags", lambda v: check_tags(v))
        record["tags"] = check_tags(tags)


def _build_host(record: dict[str, Any], params: Mapping[str, Any], _: Resolver) -> None:
    if "ip-address" in params:
        address = check_ip(params["ip-address"], "ip-address")
        key = "ipv4-address" if ipaddress.ip_address(address).version == 4 else "ipv6-address"
        record[key] = address
    if "ipv4-address" in params:
        record["ipv4-address"] = check_ip(params["ipv4-address"], "ipv4-address", 4)
    if "ipv6-address" in params:
        record["ipv6-address"] = check_ip(params["ipv6-address"], "ipv6-address", 6)
    if not record.get("ipv4-address") and not record.get("ipv6-address"):
        raise MissingParameter(
            "a host needs 'ipv4-address', 'ipv6-address' or 'ip-address'",
            details={"parameter": "ipv4-address"},
        )


def _build_network(record: dict[str, Any], params: Mapping[str, Any], _: Resolver) -> None:
    fields = dict(params)
    if "broadcast" in fields and fields.pop("broadcast") != "allow":
        # Only "allow" (Check Point's default, which the Terraform provider always sends).
        raise InvalidParameter(
            "'broadcast' can only be 'allow' here", details={"parameter": "broadcast"}
        )
    if "subnet" in fields:
        subnet = check_ip(fields.pop("subnet"), "subnet")
        version = ipaddress.ip_address(subnet).version
        fields[f"subnet{version}"] = subnet
        if "mask-length" in fields:
            fields[f"mask-length{version}"] = fields.pop("mask-length")
    if "subnet-mask" in fields:
        mask = check_ip(fields.pop("subnet-mask"), "subnet-mask", 4)
        try:
            fields["mask-length4"] = ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            raise ValidationError(f"'subnet-mask' {mask} is not a valid netmask") from None
    for version in (4, 6):
        subnet_key, mask_key = f"subnet{version}", f"mask-length{version}"
        if subnet_key in fields:
            record[subnet_key] = check_ip(fields[subnet_key], subnet_key, version)
        if mask_key in fields:
            record[mask_key] = check_mask_length(fields[mask_key], mask_key, version)
        if (subnet_key in record) != (mask_key in record):
            raise MissingParameter(
                f"a network needs both '{subnet_key}' and '{mask_key}'",
                details={"parameter": mask_key if subnet_key in record else subnet_key},
            )
        if subnet_key in record:
            _check_network_address(record[subnet_key], record[mask_key], subnet_key)
    if "subnet4" not in record and "subnet6" not in record:
        raise MissingParameter(
            "a network needs 'subnet4'/'mask-length4' or 'subnet6'/'mask-length6'",
            details={"parameter": "subnet4"},
        )


def _check_network_address(subnet: str, mask_length: int, field: str) -> None:
    try:
        ipaddress.ip_network(f"{subnet}/{mask_length}", strict=True)
    except ValueError:
        raise ValidationError(
            f"'{field}' {subnet}/{mask_length} has host bits set", details={"parameter": field}
        ) from None


def _build_range(record: dict[str, Any], params: Mapping[str, Any], _: Resolver) -> None:
    fields = dict(params)
    for end in ("first", "last"):
        generic = f"ip-address-{end}"
        if generic in fields:
            address = check_ip(fields.pop(generic), generic)
            version = ipaddress.ip_address(address).version
            fields[f"ipv{version}-address-{end}"] = address
    firsts = {v for v in (4, 6) if f"ipv{v}-address-first" in fields}
    lasts = {v for v in (4, 6) if f"ipv{v}-address-last" in fields}
    if firsts and lasts and firsts.isdisjoint(lasts):
        raise ValidationError(
            "an address range must start and end in the same IP version",
            details={"parameter": "ip-address-last"},
        )
    for version in (4, 6):
        first_key, last_key = f"ipv{version}-address-first", f"ipv{version}-address-last"
        for key in (first_key, last_key):
            if key in fields:
                record[key] = check_ip(fields[key], key, version)
        if (first_key in record) != (last_key in record):
            raise MissingParameter(
                f"an address range needs both '{first_key}' and '{last_key}'",
                details={"parameter": last_key if first_key in record else first_key},
            )
        if first_key in record and ipaddress.ip_address(record[first_key]) > ipaddress.ip_address(
            record[last_key]
        ):
            raise ValidationError(
                f"range start {record[first_key]} is after its end {record[last_key]}",
                details={"parameter": first_key},
            )
    if "ipv4-address-first" not in record and "ipv6-address-first" not in record:
        raise MissingParameter(
            "an address range needs 'ipv4-address-first' and 'ipv4-address-last'",
            details={"parameter": "ipv4-address-first"},
        )


def _build_group(record: dict[str, Any], params: Mapping[str, Any], resolve: Resolver) -> None:
    if "members" in params:
        members = params["members"]
        if isinstance(members, str):
            members = [members]

        def resolved(refs: Any) -> list[str]:
            if not isinstance(refs, list):
                raise InvalidParameter("'members' must be a list", details={"parameter": "members"})
            return resolve_references(refs, "members", NETWORK_TYPES, resolve)

        if isinstance(members, Mapping):
            record["members"] = _edited_list(record.get("members", []), members, "members",
                                             resolved)  # fmt: skip
        else:
            record["members"] = resolved(members)
        _check_no_group_cycle(record, resolve)
    record.setdefault("members", [])


def _edited_list(
    current: list[Any], edit: Mapping[str, Any], field: str, check: Callable[[Any], list[Any]]
) -> list[Any]:
    """`current` with `{"add": [...]}` and/or `{"remove": [...]}` applied (Check Point's
    forms for set-* of a list field); `check` validates and normalizes a list of refs."""
    if not edit or set(edit) - {"add", "remove"}:
        raise InvalidParameter(
            f'\'{field}\' must be a list, or {{"add": [...]}} and/or {{"remove": [...]}}',
            details={"parameter": field},
        )
    result = list(current)
    for key in ("add", "remove"):
        if key not in edit:
            continue
        value = edit[key]
        items = check([value] if isinstance(value, str) else value)
        if key == "add":
            result += [item for item in items if item not in result]
        else:
            result = [item for item in result if item not in items]
    return result


def _check_no_group_cycle(group: Mapping[str, Any], resolve: Resolver) -> None:
    seen: set[str] = set()
    pending = list(group["members"])
    while pending:
        uid = pending.pop()
        if uid == group["uid"]:
            raise ValidationError(
                f"group '{group['name']}' would contain itself", details={"parameter": "members"}
            )
        if uid in seen:
            continue
        seen.add(uid)
        member = resolve(uid)
        if member is not None and member.get("type") == "group":
            pending.extend(member.get("members", []))


def _build_service(record: dict[str, Any], params: Mapping[str, Any], _: Resolver) -> None:
    if "port" in params:
        record["port"] = check_port(params["port"])
    elif "port" not in record:
        raise MissingParameter("a service needs a 'port'", details={"parameter": "port"})


_TYPE_BUILDERS: dict[str, Callable[[dict[str, Any], Mapping[str, Any], Resolver], None]] = {
    "host": _build_host,
    "network": _build_network,
    "address-range": _build_range,
    "group": _build_group,
    "service-tcp": _build_service,
    "service-udp": _build_service,
}


def resolve_references(
    refs: Iterable[Any], field: str, allowed_types: Iterable[str], resolve: Resolver
) -> list[str]:
    """Names or uids to uids of existing objects of an allowed type, "Any" included.

    Order is kept, repeats dropped.
    """
    allowed = frozenset(allowed_types)
    uids: list[str] = []
    for ref in refs:
        if not isinstance(ref, str) or not ref:
            raise InvalidParameter(
                f"'{field}' must list object names or uids", details={"parameter": field}
            )
        uid = _resolve_one(ref, field, allowed, resolve)
        if uid not in uids:
            uids.append(uid)
    if ANY_UID in uids and len(uids) > 1:
        raise ValidationError(f"'{field}' cannot mix 'Any' with other objects")
    return uids


def _resolve_one(ref: str, field: str, allowed: frozenset[str], resolve: Resolver) -> str:
    if ref in (names.ANY_NAME, ANY_UID):
        if field == "members":
            raise ValidationError("a group cannot contain 'Any'", details={"parameter": field})
        return ANY_UID
    target = resolve(ref)
    if target is None:
        raise ValidationError(
            f"'{field}' refers to '{ref}', which does not exist",
            details={"parameter": field, "reference": ref},
        )
    if target["type"] not in allowed:
        raise ValidationError(
            f"'{field}' cannot hold '{ref}' of type {target['type']}",
            details={"parameter": field, "reference": ref},
        )
    return target["uid"]


# ---------------------------------------------------------------- rules


def build_rule(
    params: Mapping[str, Any],
    resolve: Resolver,
    *,
    existing: Mapping[str, Any] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """A validated access rule record; `existing` for `set-access-rule`; `uid` for a new
    rule whose uid is already chosen (a draft's edit re-run at publish)."""
    if existing is None:
        rule: dict[str, Any] = {
            "uid": uid or new_uid(),
            "name": "",
            "source": [ANY_UID],
            "destination": [ANY_UID],
            "service": [ANY_UID],
            "action": "Drop",
            "track": "None",
            "enabled": True,
            "comments": "",
        }
    else:
        rule = dict(existing)
    if "name" in params:
        rule["name"] = names.check_label(params["name"], "name")
    if "new-name" in params:
        rule["name"] = names.check_label(params["new-name"], "new-name")
    for field in RULE_REFERENCE_FIELDS:
        if field in params:
            refs = params[field]
            if isinstance(refs, str):
                refs = [refs]
            if not isinstance(refs, list):
                raise InvalidParameter(f"'{field}' must be a list", details={"parameter": field})
            allowed = SERVICE_TYPES if field == "service" else NETWORK_TYPES
            rule[field] = resolve_references(refs, field, allowed, resolve) or [ANY_UID]
    if "action" in params:
        rule["action"] = check_action(params["action"])
    if "track" in params:
        rule["track"] = check_track(params["track"])
    if "enabled" in params:
        rule["enabled"] = check_bool(params["enabled"], "enabled")
    if "comments" in params:
        rule["comments"] = names.check_string(params["comments"], "comments")
    return rule


def check_action(value: Any) -> str:
    if isinstance(value, str):
        for action in ACTIONS:
            if value.lower() == action.lower():
                return action
    raise ValidationError(
        f"'action' must be one of {', '.join(ACTIONS)}, not {value!r}",
        details={"parameter": "action"},
    )


def check_track(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("type")
    if isinstance(value, str):
        for track in TRACKS:
            if value.lower() == track.lower():
                return track
    raise ValidationError(
        f"'track' must be one of {', '.join(TRACKS)}, not {value!r}",
        details={"parameter": "track"},
    )


def effective_order(order: Iterable[str], rules: Mapping[str, Any]) -> list[str]:
    """The rulebase order as every reader sees it.

    Concurrent moves can leave a uid twice in the order list and a concurrent delete can
    leave a uid whose rule is gone: keep the first occurrence of each existing rule, and
    put rules missing from the list (never produced by crdtmds itself) last, by uid.
    """
    seen: set[str] = set()
    result: list[str] = []
    for uid in order:
        if uid in rules and uid not in seen:
            seen.add(uid)
            result.append(uid)
    result.extend(sorted(uid for uid in rules if uid not in seen))
    return result


def check_position(value: Any, field: str = "position") -> Any:
    """Validate a position: "top", "bottom", a 1-based number, {"above"|"below": rule or
    section} or {"top"|"bottom": section} (resolved by `crdtmds.core.sections`)."""
    if isinstance(value, str):
        if value in ("top", "bottom"):
            return value
        if _is_ascii_number(value):
            value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValidationError(f"'{field}' must be 1 or more", details={"parameter": field})
        return value
    if isinstance(value, Mapping) and len(value) == 1:
        ((where, ref),) = value.items()
        if where in POSITION_PLACES and isinstance(ref, str | int) and not isinstance(ref, bool):
            return {where: ref}
    raise InvalidParameter(
        f'\'{field}\' must be "top", "bottom", a rule number or {{"above"|"below": rule}}'
        ' or {"top"|"bottom": section}',
        details={"parameter": field},
    )
