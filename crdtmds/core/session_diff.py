"""What a draft changes: the objects and rules it adds, modifies (field by field, old ->
new) and deletes, and the rules it moves, against the domain it started from.

Pure functions over two plain-data views of a domain (`DomainState`), no document.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crdtmds.core.domain_state import DomainState, Layer

_FEW_MOVED = 4
"""Up to this many moved rules, each one's number is found by a search in C."""


@dataclass(slots=True)
class Touched:
    """What the draft changed since its base, so show-changes need not scan everything."""

    objects: set[str] = field(default_factory=set)
    rules: set[tuple[str, str]] = field(default_factory=set)
    orders: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.objects) + len(self.rules)


def draft_changes(
    base: DomainState, view: DomainState, touched: Touched
) -> dict[str, list[dict[str, Any]]]:
    """What the draft adds, modifies (field by field, old -> new) and deletes."""
    added: list[dict[str, Any]] = []
    modified: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    for uid in sorted(touched.objects):
        _classify(base.objects.get(uid), view.objects.get(uid), added, modified,
                  deleted)  # fmt: skip
    for layer_uid, uid in sorted(touched.rules):
        old_layer = base.layers.get(layer_uid)
        new_layer = view.layers.get(layer_uid)
        _classify(_as_entry(old_layer, uid), _as_entry(new_layer, uid), added, modified,
                  deleted)  # fmt: skip
    _add_moved_rules(base, view, touched, modified)
    return {"added": added, "modified": modified, "deleted": deleted}


def state_changes(before: DomainState, after: DomainState) -> dict[str, list[dict[str, Any]]]:
    """What changed from one state of a domain to another (two revisions), in the shape
    of a draft's changes: every object, rule and order of either is compared."""
    touched = Touched(
        objects=set(before.objects) | set(after.objects),
        rules={
            (layer_uid, uid)
            for state in (before, after)
            for layer_uid, layer in state.layers.items()
            for uid in layer.rules
        },
        orders=set(before.layers) & set(after.layers),
    )
    return draft_changes(before, after, touched)


def _add_moved_rules(
    base: DomainState, view: DomainState, touched: Touched, modified: list[dict[str, Any]]
) -> None:
    """Report rules the draft moved as a change of their `rule-number`.

    A rule counts as moved when its order relative to the other rules changed; a rule
    that only shifted because others were added, deleted or moved around it does not.
    """
    listed = {entry["uid"]: entry for entry in modified}
    for layer_uid in sorted(touched.orders):
        old_layer, new_layer = base.layers.get(layer_uid), view.layers.get(layer_uid)
        if old_layer is None or new_layer is None:
            continue
        old_order, new_order = old_layer.ordered_uids(), new_layer.ordered_uids()
        moved = moved_rules(old_order, new_order)
        if not moved:
            continue
        before = _numbers_of(old_order, moved)
        after = _numbers_of(new_order, moved)
        for uid in sorted(moved, key=after.__getitem__):
            number = {"rule-number": {"old": before[uid], "new": after[uid]}}
            if uid in listed:
                listed[uid]["fields"].update(number)
                continue
            modified.append(
                {
                    "uid": uid,
                    "type": "access-rule",
                    "name": new_layer.rules[uid].get("name", ""),
                    "layer": new_layer.name,
                    "fields": number,
                }
            )


def moved_rules(old_order: list[str], new_order: list[str]) -> set[str]:
    """Rules in both orders whose order relative to the others changed: those outside one
    longest run that kept its order. Only the stretch between the first and the last
    difference is searched: the rules before and after it kept their places, and a move
    or two in a big layer leaves most of the layer there."""
    old_middle, new_middle = _differing_stretch(old_order, new_order)
    if (one := _moved_across(old_middle, new_middle)) is not None:
        return one  # the usual case, found without building sets of the stretch
    if len(old_middle) != len(new_middle) or set(old_middle) != set(new_middle):
        # Rules were added or deleted too: compare the rules both orders hold.
        old_set, new_set = set(old_order), set(new_order)
        old_kept = [u for u in old_order if u in new_set]
        new_kept = [u for u in new_order if u in old_set]
        old_middle, new_middle = _differing_stretch(old_kept, new_kept)
        if (one := _moved_across(old_middle, new_middle)) is not None:
            return one
    if not old_middle:
        return set()
    rank = {u: n for n, u in enumerate(old_middle)}
    return set(new_middle) - _longest_increasing(new_middle, rank.__getitem__)


def _moved_across(old: list[str], new: list[str]) -> set[str] | None:
    """The one rule that moved across the whole stretch, if one did: up (checked first,
    so that of two rules that swapped, the later one is the one that moved, as the
    longest run has it) or down; None otherwise."""
    if len(old) != len(new) or not old:
        return None
    if old[-1] == new[0] and old[:-1] == new[1:]:
        return {old[-1]}
    if old[0] == new[-1] and old[1:] == new[:-1]:
        return {old[0]}
    return None


_CHUNK = 256
"""Items compared per slice while looking for where two orders differ."""


def _differing_stretch(old: list[str], new: list[str]) -> tuple[list[str], list[str]]:
    """Both lists without the items they share at their start and at their end."""
    start = _common_prefix(old, new)
    end = _common_suffix(old, new, start)
    return old[start : len(old) - end], new[start : len(new) - end]


def _common_prefix(first: list[str], second: list[str]) -> int:
    """How many leading items two lists share. Slices compare in C (and the same
    string objects by identity): chunk by chunk, then a bisection within the chunk
    that differs. A bisection over whole prefixes copied O(n log n) items."""
    limit = min(len(first), len(second))
    start = 0
    while start < limit and first[start : start + _CHUNK] == second[start : start + _CHUNK]:
        start += _CHUNK
    start = min(start, limit)  # two equal lists end on a whole chunk
    low, high = start, min(start + _CHUNK, limit)
    while low < high:
        middle = (low + high + 1) // 2
        if first[start:middle] == second[start:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(first: list[str], second: list[str], prefix: int) -> int:
    """How many trailing items two lists share, not counting into their first `prefix`."""
    limit = min(len(first), len(second)) - prefix
    a, b = len(first), len(second)
    end = 0
    while end < limit:
        step = min(_CHUNK, limit - end)
        if first[a - end - step : a - end] != second[b - end - step : b - end]:
            break
        end += step
    low, high = end, min(end + _CHUNK, limit)
    while low < high:  # the longest shared tail of the chunk that differs
        middle = (low + high + 1) // 2
        if first[a - middle : a - end] == second[b - middle : b - end]:
            low = middle
        else:
            high = middle - 1
    return low


def _numbers_of(order: list[str], uids: set[str]) -> dict[str, int]:
    """The 1-based rule numbers of `uids` in `order` (a few are looked up in C)."""
    if len(uids) <= _FEW_MOVED:
        return {u: order.index(u) + 1 for u in uids}
    return {u: n for n, u in enumerate(order, start=1) if u in uids}


def _longest_increasing(items: list[str], key: Callable[[str], int]) -> set[str]:
    """The items of one longest subsequence of `items` whose keys increase."""
    tails: list[int] = []  # tails[k]: index of the smallest last item of a run of length k+1
    tail_keys: list[int] = []
    previous: list[int | None] = []
    for index, item in enumerate(items):
        k = key(item)
        length = bisect.bisect_left(tail_keys, k)
        previous.append(tails[length - 1] if length else None)
        if length == len(tails):
            tails.append(index)
            tail_keys.append(k)
        else:
            tails[length] = index
            tail_keys[length] = k
    found: set[str] = set()
    cursor = tails[-1] if tails else None
    while cursor is not None:
        found.add(items[cursor])
        cursor = previous[cursor]
    return found


def _as_entry(layer: Layer | None, uid: str) -> dict[str, Any] | None:
    """A rule, or a section (stored beside the rules), as show-changes lists it."""
    if layer is not None and uid in layer.sections:
        return {**layer.sections[uid], "layer": layer.name}
    return _as_rule(layer.rules.get(uid) if layer else None, layer)


def _as_rule(rule: dict[str, Any] | None, layer: Layer | None) -> dict[str, Any] | None:
    if rule is None or layer is None:
        return None
    return {**rule, "type": "access-rule", "layer": layer.name}


def _classify(
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    added: list[dict[str, Any]],
    modified: list[dict[str, Any]],
    deleted: list[dict[str, Any]],
) -> None:
    if old is None and new is not None:
        added.append(new)
    elif new is None and old is not None:
        deleted.append(old)
    elif old is not None and new is not None and old != new:
        fields = {
            key: {"old": old.get(key), "new": new.get(key)}
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
        }
        modified.append(
            {
                "uid": new["uid"],
                "type": new.get("type"),
                "name": new.get("name", ""),
                "fields": fields,
            }
        )
