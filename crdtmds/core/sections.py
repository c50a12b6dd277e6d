"""Access sections and positions in a layer: pure functions over a `Layer`, no document.

A section is a marker in the layer's order list, as in Check Point: the rules after it
up to the next marker are its rules, and rule numbers run on across sections. Its record
(`{"uid", "type": "access-section", "name"}`) sits in the layer's `rules` map. A move is
a change of the order list and a rename a change of the record, so a concurrent move and
rename both survive the merge; a rule keeps its place in the list whatever happens to the
markers around it (a deleted section's rules join the section before it).

Positions, for rules and sections alike, are resolved to an index of the stored order
list: "top", "bottom", a 1-based rule number (above that rule), `{"above"|"below": rule
or section}` and `{"top"|"bottom": section}`. Below a section is the top of it; above a
section is the end of the section before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crdtmds.core import model, names
from crdtmds.core.domain_state import SECTION_TYPE, Layer, by_uid_or_name
from crdtmds.errors import ObjectNotFound, ValidationError


@dataclass(slots=True)
class Group:
    """A run of the rulebase: the rules of one section, or those before any section."""

    section: str | None
    rules: list[tuple[int, str]] = field(default_factory=list)
    """(rule number, rule uid) of each rule, in order."""


def build_section(
    params: Mapping[str, Any],
    existing: Mapping[str, Any] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """A validated section record; `existing` for `set-access-section`; `uid` for a new
    section whose uid is already chosen."""
    if existing is None:
        record: dict[str, Any] = {"uid": uid or model.new_uid(), "type": SECTION_TYPE, "name": ""}
        record["name"] = names.check_label(model.require(params, "name"), "name")
    else:
        record = dict(existing)
    if "new-name" in params:
        record["name"] = names.check_label(params["new-name"], "new-name")
    return record


def groups(layer: Layer) -> list[Group]:
    """The rulebase as Check Point shows it: loose rules first (if any), then each
    section with its rules, numbered on across sections."""
    result = [Group(None)]
    number = 0
    for uid in layer.entries():
        if uid in layer.sections:
            result.append(Group(uid))
        else:
            number += 1
            result[-1].rules.append((number, uid))
    if not result[0].rules:
        result.pop(0)
    return result


def section_of(layer: Layer, rule_uid: str) -> str | None:
    """The uid of the section holding a rule (None: before every section)."""
    for group in groups(layer):
        if any(uid == rule_uid for _, uid in group.rules):
            return group.section
    return None


def find_section(layer: Layer, ref: Any) -> dict[str, Any]:
    """A section of `layer` by uid or name (the lowest uid if several share the name)."""
    found = by_uid_or_name(layer.sections, ref)
    if found is not None:
        return found
    raise ObjectNotFound(
        f"access section '{ref}' not found in layer '{layer.name}'",
        details={"reference": ref, "layer": layer.name},
    )


def raw_index(layer: Layer, position: Any, find_rule: Any, *, moving: str | None = None) -> int:
    """Index in the stored order list for `position` (checked by `model.check_position`).

    `find_rule(layer, ref)` returns a rule record or raises `ObjectNotFound`. With
    `moving`, the index is in the order list once that rule or marker is taken out of it,
    and a rule number is where the moved entry ends up.
    """
    order = _Without(layer.order, moving)
    if position == "top":
        return 0
    if position == "bottom":
        return len(order)
    if isinstance(position, int):
        visible = _Without(layer.ordered_uids(), moving)
        _check_within(layer, position, len(visible))
        anchor = visible.at(position - 1) if position <= len(visible) else None
        return _index_in(order, anchor, "above")
    ((where, ref),) = position.items()
    anchor, is_section = _anchor(layer, where, ref, find_rule)
    if anchor == moving:
        raise ValidationError("an entry cannot be moved relative to itself")
    if where == "bottom":
        following = _next_section(layer, anchor, moving)
        return _index_in(order, following, "above")
    if is_section and where in ("top", "below"):
        return _index_in(order, anchor, "below")
    return _index_in(order, anchor, where)


def _check_within(layer: Layer, position: int, entries: int) -> None:
    """A rule number names a place in the layer or the one just after its end."""
    if position > entries + 1:
        count = len(layer.ordered_uids())
        raise ValidationError(
            f"position {position} is beyond the end of layer '{layer.name}' "
            f"({count} rule(s)): give 1 to {entries + 1}, or bottom",
            details={"position": position, "rules": count},
        )


def _anchor(layer: Layer, where: str, ref: Any, find_rule: Any) -> tuple[str, bool]:
    if where in ("above", "below"):
        try:
            return find_rule(layer, ref)["uid"], False
        except ObjectNotFound:
            if not isinstance(ref, str):
                raise
    return find_section(layer, ref)["uid"], True


def _next_section(layer: Layer, section: str, moving: str | None) -> str | None:
    entries = [u for u in layer.entries() if u != moving]
    after = entries[entries.index(section) + 1 :] if section in entries else []
    return next((u for u in after if u in layer.sections), None)


def _index_in(order: _Without, anchor: str | None, where: str) -> int:
    # Entries missing from the order list are shown last, after everything in it.
    index = order.index(anchor) if anchor is not None else None
    if index is None:
        return len(order)
    return index if where == "above" else index + 1


class _Without:
    """A list as it would be without every occurrence of one entry, read without copying
    it (a layer's order holds up to tens of thousands of uids; searches run in C)."""

    def __init__(self, items: list[str], left_out: str | None) -> None:
        self.items = items
        self.left_out = left_out
        self._count = items.count(left_out) if left_out is not None else 0

    def __len__(self) -> int:
        return len(self.items) - self._count

    def index(self, item: str) -> int | None:
        """Where `item` first stands in the list without the entry; None if absent."""
        if item == self.left_out or item not in self.items:
            return None
        index = self.items.index(item)
        return index - (self.items[:index].count(self.left_out) if self._count else 0)

    def at(self, position: int) -> str:
        """The entry at `position` (0-based) of the list without the left-out entry."""
        if not self._count:
            return self.items[position]
        first = self.items.index(self.left_out)  # ordered_uids: at most once
        return self.items[position if position < first else position + 1]
