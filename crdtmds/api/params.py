"""Checks of command parameters, each refusing a bad one with its Check Point error code,
and paging of lists."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from crdtmds.core import model
from crdtmds.errors import InvalidParameter, MissingParameter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
DETAILS_LEVELS = ("uid", "standard", "full")
IGNORE_FLAGS = ("ignore-warnings", "ignore-errors")
PAGING = frozenset(("limit", "offset", "details-level"))
"""The parameters of every list command."""
WRITE_EXTRAS = (*IGNORE_FLAGS, "details-level", "auto-publish-session")
"""Accepted by every command that writes an object, rule or section; see `tolerated`."""
RULE_DEFAULTS: dict[str, Any] = {
    "install-on": ("Policy Targets",), "time": ("Any",), "content": ("Any",), "vpn": ("Any",),
    "content-direction": ("any",), "source-negate": (False,), "destination-negate": (False,),
    "service-negate": (False,), "content-negate": (False,),
}  # fmt: skip
"""Rule parameters of Check Point that crdtmds does not keep, with the values every rule
here has: given those, a rule means the same; given another, the reply warns."""
RULE_EXTRAS = tuple(RULE_DEFAULTS)


def tolerated(params: Mapping[str, Any]) -> list[str]:
    """Warnings for parameters accepted but not acted on, where a Check Point server would
    behave differently."""
    notes = []
    if params.get("auto-publish-session") is True:
        notes.append("'auto-publish-session' is not acted on: call 'publish' to publish")
    for key, values in RULE_DEFAULTS.items():
        if key in params and not _means_default(params[key], values):
            notes.append(f"'{key}' is not kept: every rule here has {values[0]!r}")
    return notes


def _means_default(value: Any, defaults: tuple[Any, ...]) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(
        item in defaults
        or (isinstance(item, str) and item.lower() in [str(d).lower() for d in defaults])
        or (isinstance(item, Mapping) and item.get("name") in defaults)
        for item in items
    )


def optional_string(params: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = params.get(key, default)
    if value is not None and not isinstance(value, str):
        raise InvalidParameter(f"'{key}' must be a string", details={"parameter": key})
    return value


def required_string(params: Mapping[str, Any], key: str) -> str:
    value = optional_string(params, key)
    if not value:
        raise MissingParameter(f"missing required parameter '{key}'", details={"parameter": key})
    return value


def boolean(params: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = params.get(key, default)
    return model.check_bool(value, key)


def integer(
    params: Mapping[str, Any], key: str, default: int, low: int, high: int | None = None
) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"'{key}' must be an integer", details={"parameter": key})
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise InvalidParameter(f"'{key}' must be {bounds}", details={"parameter": key})
    return value


def details_level(params: Mapping[str, Any]) -> str:
    level = params.get("details-level", "standard")
    if level not in DETAILS_LEVELS:
        raise InvalidParameter(
            f"'details-level' must be one of {', '.join(DETAILS_LEVELS)}",
            details={"parameter": "details-level"},
        )
    return level


def check_ignore_flags(params: Mapping[str, Any]) -> None:
    for flag in IGNORE_FLAGS:
        if flag in params:
            model.check_bool(params[flag], flag)


def page_of(items: list[Any], params: Mapping[str, Any]) -> tuple[list[Any], dict[str, int]]:
    """One page of `items` and its `from`/`to`/`total` (1-based, `to == total` at the end)."""
    limit = integer(params, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
    offset = integer(params, "offset", 0, 0)
    start = min(offset, len(items))
    chosen = items[start : start + limit]
    first = start + 1 if chosen else start
    return chosen, {"from": first, "to": start + len(chosen), "total": len(items)}


def name_filter(params: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    text = (optional_string(params, "filter") or "").strip().lower()
    if not text:
        return lambda _: True
    return lambda record: text in str(record.get("name", "")).lower()
