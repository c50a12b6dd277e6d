"""A draft's edits as commands: each one validated against a plain-data view of the domain,
applied to that view, and turned into the Automerge operations that write it.

An `Edit` is what an administrator asked for (`add-host`, `set-access-rule`, ...) in a
pinned form: once run, it names what it touched by uid (the new record's uid, the rule a
rule number named, the layer) and positions by a neighbour, so that running it again gives
the same result on the same view, and the natural one on a newer view (a rebase, when
others published since the draft's base). Run on a newer view, the same checks apply: a
record deleted meanwhile or a name taken meanwhile refuses the edit.

`run_edit` returns the operations as a `Write`, a function of a `DocWriter` (one open
transaction of the document): nothing is written to any document while a draft is edited.
Pure: no I/O, no document but the one a publish hands to the writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crdtmds.core import model, sections
from crdtmds.core.docdata import ROOT, child_id, insert_value, put_value
from crdtmds.core.domain_state import DomainState, Layer
from crdtmds.core.field_writes import put_changed_fields
from crdtmds.core.session_diff import Touched
from crdtmds.errors import InvalidParameter, NameInUse, ObjectInUse, ObjectNotFound, ValidationError

NEW_UID = "_uid"
"""Parameter of a pinned `add-*` edit: the uid its record was given when first run."""


class DocWriter:
    """Object ids of a domain document's containers, looked up in one open transaction
    (an id is stable, so each is looked up once per publish)."""

    def __init__(self, tx: Any) -> None:
        self.tx = tx
        self._ids: dict[tuple[str, ...], bytes] = {}

    def _child(self, key: tuple[str, ...], parent: bytes, name: str, what: str) -> bytes:
        found = self._ids.get(key)
        if found is None:
            found = child_id(self.tx, parent, name)
            if found is None:
                raise ObjectNotFound(f"{what} not found in the domain document")
            self._ids[key] = found
        return found

    def objects(self) -> bytes:
        return self._child(("objects",), ROOT, "objects", "the object map")

    def object(self, uid: str) -> bytes:
        return self._child(("object", uid), self.objects(), uid, f"object '{uid}'")

    def layer(self, layer_uid: str) -> tuple[bytes, bytes]:
        """Ids of the rule map and the order list of a layer."""
        layers = self._child(("layers",), ROOT, "layers", "the layer map")
        layer = self._child(("layer", layer_uid), layers, layer_uid, f"layer '{layer_uid}'")
        rules = self._child(("rules", layer_uid), layer, "rules", f"layer '{layer_uid}'")
        order = self._child(("order", layer_uid), layer, "order", f"layer '{layer_uid}'")
        return rules, order

    def record(self, layer_uid: str, uid: str) -> bytes:
        """Id of a rule or section record of a layer."""
        rules, _ = self.layer(layer_uid)
        return self._child(("record", layer_uid, uid), rules, uid, f"rule or section '{uid}'")


Write = Callable[[DocWriter], None]


@dataclass(frozen=True, slots=True)
class Edit:
    """One command of a draft: `kind` is the API command (`add-object`, ...) and
    `obj_type` the object type of object commands."""

    kind: str
    params: dict[str, Any]
    obj_type: str = ""

    def to_bytes(self) -> bytes:
        plain = {"kind": self.kind, "type": self.obj_type, "params": self.params}
        return json.dumps(plain, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Edit:
        try:
            plain = json.loads(data)
            return cls(str(plain["kind"]), dict(plain["params"]), str(plain.get("type", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"not a stored edit: {exc}") from None

    def describe(self) -> dict[str, Any]:
        return {"command": self.kind, "type": self.obj_type, **self.params}


@dataclass(slots=True)
class Outcome:
    """What running an edit gave: the reply, the pinned edit, and its writes (None when
    it changed nothing)."""

    result: dict[str, Any]
    pinned: Edit
    write: Write | None
    touched: Touched = field(default_factory=Touched)


def run_edit(state: DomainState, edit: Edit) -> Outcome:
    """Validate `edit` against `state` and apply it there; raises before changing
    anything when it is refused."""
    runner = _RUNNERS.get(edit.kind)
    if runner is None:
        raise ValidationError(f"unknown draft edit '{edit.kind}'")
    return runner(state, edit)


# ---------------------------------------------------------------- objects


def _add_object(state: DomainState, edit: Edit) -> Outcome:
    params = edit.params
    record = model.build_object(edit.obj_type, params, state.find_object, uid=params.get(NEW_UID))
    check_name_free(state, record["name"], record["uid"])
    uid = record["uid"]
    state.put_object(uid, record)
    pinned = {**params, NEW_UID: uid, **_pinned_references(params, record, ("members",))}

    def write(doc: DocWriter) -> None:
        put_value(doc.tx, doc.objects(), uid, record)

    return Outcome(record, Edit(edit.kind, pinned, edit.obj_type), write, Touched({uid}))


def _set_object(state: DomainState, edit: Edit) -> Outcome:
    params = edit.params
    current = state.get_object(object_ref(params), edit.obj_type)
    record = model.build_object(edit.obj_type, params, state.find_object, existing=current)
    if record["name"] != current["name"]:
        check_name_free(state, record["name"], record["uid"])
    uid = record["uid"]
    pinned = {k: v for k, v in params.items() if k != "name"}
    pinned.update(uid=uid, **_pinned_references(params, record, ("members",)))
    pinned_edit = Edit(edit.kind, pinned, edit.obj_type)
    if record == current:
        return Outcome(record, pinned_edit, None)
    state.put_object(uid, record)

    def write(doc: DocWriter) -> None:
        put_changed_fields(doc.tx, doc.object(uid), current, record)

    return Outcome(record, pinned_edit, write, Touched({uid}))


def _delete_object(state: DomainState, edit: Edit) -> Outcome:
    record = state.get_object(object_ref(edit.params), edit.obj_type)
    uses = state.where_used(record["uid"])
    if uses:
        raise ObjectInUse(
            f"{edit.obj_type} '{record['name']}' is still used by {len(uses)} rule(s) or group(s)",
            details={"where-used": uses},
        )
    uid = record["uid"]
    state.remove_object(uid)

    def write(doc: DocWriter) -> None:
        doc.tx.delete(doc.objects(), uid)

    return Outcome(record, Edit(edit.kind, {"uid": uid}, edit.obj_type), write, Touched({uid}))


# ---------------------------------------------------------------- rules


def _add_rule(state: DomainState, edit: Edit) -> Outcome:
    params = edit.params
    layer = state.get_layer(params.get("layer"))
    position = model.check_position(params.get("position", "top"))
    rule = model.build_rule(params, state.find_object, uid=params.get(NEW_UID))
    index = raw_index(state, layer, position)
    layer = state.writable_layer(layer)
    layer.insert_rule(rule, index)
    uid = rule["uid"]
    pinned = {**params, NEW_UID: uid, "layer": layer.uid, "position": pin_position(layer, uid)}
    pinned.update(_pinned_references(params, rule, model.RULE_REFERENCE_FIELDS))
    write = _insert_entry(layer.uid, rule, index)
    touched = Touched(rules={(layer.uid, uid)})
    return Outcome(numbered(layer, rule), Edit(edit.kind, pinned), write, touched)


def _set_rule(state: DomainState, edit: Edit) -> Outcome:
    params = edit.params
    layer = state.get_layer(params.get("layer"))
    current = state.get_rule(layer, rule_ref(params))
    rule = model.build_rule(params, state.find_object, existing=current)
    uid = rule["uid"]
    # Resolve the move before changing anything, so a bad position refuses the whole edit.
    target = None
    if "new-position" in params:
        position = model.check_position(params["new-position"], "new-position")
        target = raw_index(state, layer, position, moving=uid)
    pinned = {k: v for k, v in params.items() if k not in ("rule-number", "uid")}
    if "uid" not in params and "rule-number" not in params:
        pinned.pop("name", None)  # it named the rule; a rename elsewhere must survive
    pinned.update(uid=uid, layer=layer.uid)
    pinned.update(_pinned_references(params, rule, model.RULE_REFERENCE_FIELDS))
    layer, write, touched = _change_entry(
        state, layer, current, rule, target, pinned, put=Layer.replace_rule
    )
    result = numbered(layer, layer.rules[uid])
    return Outcome(result, Edit(edit.kind, pinned), write, touched)


def _delete_rule(state: DomainState, edit: Edit) -> Outcome:
    layer = state.get_layer(edit.params.get("layer"))
    rule = state.get_rule(layer, rule_ref(edit.params))
    return _delete_entry(state, edit, layer, rule, remove=Layer.remove_rule)


# ---------------------------------------------------------------- sections


def _add_section(state: DomainState, edit: Edit) -> Outcome:
    params = edit.params
    layer = state.get_layer(params.get("layer"))
    position = model.check_position(params.get("position", "top"))
    section = sections.build_section(params, uid=params.get(NEW_UID))
    index = sections.raw_index(layer, position, state.get_rule)
    layer = state.writable_layer(layer)
    layer.put_section(section)
    layer.insert_marker(section["uid"], index)
    uid = section["uid"]
    pinned = {**params, NEW_UID: uid, "layer": layer.uid, "position": pin_position(layer, uid)}
    write = _insert_entry(layer.uid, section, index)
    return Outcome(section, Edit(edit.kind, pinned), write, Touched(rules={(layer.uid, uid)}))


def _set_section(state: DomainState, edit: Edit) -> Outcome:
    params = edit.params
    layer = state.get_layer(params.get("layer"))
    current = sections.find_section(layer, section_ref(params))
    section = sections.build_section(params, current)
    uid = section["uid"]
    target = None
    if "new-position" in params:
        position = model.check_position(params["new-position"], "new-position")
        target = sections.raw_index(layer, position, state.get_rule, moving=uid)
    pinned = {k: v for k, v in params.items() if k != "name"}
    pinned.update(uid=uid, layer=layer.uid)
    _, write, touched = _change_entry(
        state, layer, current, section, target, pinned, put=Layer.put_section
    )
    return Outcome(section, Edit(edit.kind, pinned), write, touched)


def _delete_section(state: DomainState, edit: Edit) -> Outcome:
    """Its rules stay where they are (in the section before it)."""
    layer = state.get_layer(edit.params.get("layer"))
    section = sections.find_section(layer, section_ref(edit.params))
    return _delete_entry(state, edit, layer, section, remove=Layer.remove_section)


# ---------------------------------------------------------------- shared steps


def _change_entry(
    state: DomainState,
    layer: Layer,
    current: dict[str, Any],
    record: dict[str, Any],
    target: int | None,
    pinned: dict[str, Any],
    *,
    put: Callable[[Layer, dict[str, Any]], None],
) -> tuple[Layer, Write | None, Touched]:
    """A rule or section edited in place (`put` stores the new record) and then moved
    to raw index `target`, if given (its place pinned in `pinned`); returns the layer as
    the draft now has it, the writes and what was touched."""
    uid = record["uid"]
    writes: list[Write] = []
    touched = Touched()
    if record != current:
        layer = state.writable_layer(layer)
        put(layer, record)
        touched.rules.add((layer.uid, uid))
        writes.append(_record_fields(layer.uid, uid, current, record))
    if target is not None:
        layer = state.writable_layer(layer)
        writes.append(move_entry(layer, uid, target, touched))
        pinned["new-position"] = pin_position(layer, uid)
    return layer, _all(writes), touched


def _delete_entry(
    state: DomainState,
    edit: Edit,
    layer: Layer,
    record: dict[str, Any],
    *,
    remove: Callable[[Layer, str], None],
) -> Outcome:
    """A rule or section deleted (`remove` takes it out of the layer), pinned by uid."""
    uid = record["uid"]
    layer = state.writable_layer(layer)
    write = _remove_entry(layer, uid)
    remove(layer, uid)
    pinned = Edit(edit.kind, {"uid": uid, "layer": layer.uid})
    return Outcome(record, pinned, write, Touched(rules={(layer.uid, uid)}))


def _insert_entry(layer_uid: str, record: dict[str, Any], index: int) -> Write:
    uid = record["uid"]

    def write(doc: DocWriter) -> None:
        rules, order = doc.layer(layer_uid)
        put_value(doc.tx, rules, uid, record)
        insert_value(doc.tx, order, index, uid)

    return write


def _remove_entry(layer: Layer, uid: str) -> Write:
    indices = layer.indices_of(uid)
    layer_uid = layer.uid

    def write(doc: DocWriter) -> None:
        rules, order = doc.layer(layer_uid)
        doc.tx.delete(rules, uid)
        for index in reversed(indices):
            doc.tx.delete(order, index)

    return write


def _record_fields(layer_uid: str, uid: str, old: dict[str, Any], new: dict[str, Any]) -> Write:
    def write(doc: DocWriter) -> None:
        put_changed_fields(doc.tx, doc.record(layer_uid, uid), old, new)

    return write


def move_entry(layer: Layer, uid: str, target: int, touched: Touched) -> Write:
    """Move rule or section `uid` of a writable `layer` to index `target` of its order
    list without it."""
    indices = layer.indices_of(uid)
    layer_uid = layer.uid

    def write(doc: DocWriter) -> None:
        _, order = doc.layer(layer_uid)
        for index in reversed(indices):
            doc.tx.delete(order, index)
        insert_value(doc.tx, order, target, uid)

    layer.move_rule(uid, target)
    # Only moves (and reverts) change the relative order of rules; adds and deletes do
    # not, so only these layers need the order comparison of show-changes.
    touched.orders.add(layer_uid)
    return write


def _all(writes: list[Write]) -> Write | None:
    if not writes:
        return None

    def write(doc: DocWriter) -> None:
        for each in writes:
            each(doc)

    return write


def pin_position(layer: Layer, uid: str) -> Any:
    """Where entry `uid` now stands, as a position that finds the same place again: below
    the existing entry before it in the stored order, or the top. A repeat left by
    concurrent moves is passed over: "below" finds an entry's first occurrence, the one
    readers see, so anchoring on a repeat would land elsewhere when run again."""
    order = layer.order
    index = order.index(uid)
    if layer.is_clean():  # every entry once: the one before is the anchor
        return {"below": order[index - 1]} if index else "top"
    for at in range(index - 1, -1, -1):
        before = order[at]
        if (before in layer.rules or before in layer.sections) and order.index(before) == at:
            return {"below": before}
    return "top"


def _pinned_references(
    params: Mapping[str, Any], record: Mapping[str, Any], fields: tuple[str, ...]
) -> dict[str, Any]:
    """Reference fields given by name, as the uids they named (a rename elsewhere must
    not change what the edit refers to)."""
    return {key: record[key] for key in fields if key in params and key in record}


def check_name_free(view: DomainState, name: str, uid: str) -> None:
    holders = [u for u in view.names.get(name, ()) if u != uid]
    if holders:
        raise NameInUse(
            f"the name '{name}' is already in use",
            details={"name": name, "uid": holders[0]},
        )


def raw_index(view: DomainState, layer: Layer, position: Any, *, moving: str | None = None) -> int:
    """Index in the stored order list for a position given against the visible order
    (see `crdtmds.core.sections.raw_index`: rules and sections are anchors)."""
    return sections.raw_index(layer, position, view.get_rule, moving=moving)


def numbered(layer: Layer, rule: dict[str, Any]) -> dict[str, Any]:
    number = layer.number_of(rule["uid"])
    return {**rule, "type": "access-rule", "layer": layer.uid, "rule-number": number}


def object_ref(params: Mapping[str, Any]) -> str:
    ref = params.get("uid", params.get("name"))
    if not isinstance(ref, str) or not ref:
        raise InvalidParameter("name the object with 'uid' or 'name'")
    return ref


def rule_ref(params: Mapping[str, Any]) -> Any:
    for key in ("uid", "rule-number", "name"):
        if key in params:
            return params[key]
    raise InvalidParameter("name the rule with 'uid', 'rule-number' or 'name'")


def section_ref(params: Mapping[str, Any]) -> str:
    ref = params.get("uid", params.get("name"))
    if not isinstance(ref, str) or not ref:
        raise InvalidParameter("name the section with 'uid' or 'name'")
    return ref


_RUNNERS: dict[str, Callable[[DomainState, Edit], Outcome]] = {
    "add-object": _add_object,
    "set-object": _set_object,
    "delete-object": _delete_object,
    "add-rule": _add_rule,
    "set-rule": _set_rule,
    "delete-rule": _delete_rule,
    "add-section": _add_section,
    "set-section": _set_section,
    "delete-section": _delete_section,
}
