"""Writing plain-data content into a domain document field by field: a record's changed
fields, and a whole domain made like another (a revert to a past revision).

Field-level writes, never whole records replaced: concurrent edits of different fields of
one record, or a rule another session adds meanwhile, survive the merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdtmds.core.docdata import child_id, insert_value, put_value
from crdtmds.core.domain_state import DomainState


def write_objects_like(tx: Any, objects: bytes, draft: DomainState, target: DomainState) -> None:
    """Make the object map `objects`, which `draft` reads, hold the objects of `target`."""
    for uid in draft.objects.keys() - target.objects.keys():
        tx.delete(objects, uid)
    for uid, record in target.objects.items():
        current = draft.objects.get(uid)
        if current is None:
            put_value(tx, objects, uid, record)
        elif current != record:
            obj = child_id(tx, objects, uid)
            if obj is None:
                put_value(tx, objects, uid, record)
            else:
                put_changed_fields(tx, obj, current, record)


def write_layers_like(tx: Any, layers: bytes, draft: DomainState, target: DomainState) -> None:
    """Make the layer map `layers`, which `draft` reads, hold the layers of `target`."""
    for uid in draft.layers.keys() - target.layers.keys():
        tx.delete(layers, uid)
    for uid, layer in target.layers.items():
        # Sections are stored in the rules map too (see `Layer`).
        entries = {**layer.rules, **layer.sections}
        plain = {"uid": uid, "name": layer.name, "rules": entries, "order": layer.order}
        current = draft.layers.get(uid)
        layer_id = child_id(tx, layers, uid) if current else None
        if layer_id is None:
            put_value(tx, layers, uid, plain)
            continue
        rules_id = child_id(tx, layer_id, "rules")
        if rules_id is None:
            put_value(tx, layers, uid, plain)
            continue
        if current.name != layer.name:
            put_value(tx, layer_id, "name", layer.name)
        current_entries = {**current.rules, **current.sections}
        for rule_uid in current_entries.keys() - entries.keys():
            tx.delete(rules_id, rule_uid)
        for rule_uid, rule in entries.items():
            old = current_entries.get(rule_uid)
            rule_id = child_id(tx, rules_id, rule_uid) if old is not None else None
            if rule_id is None:
                put_value(tx, rules_id, rule_uid, rule)
            elif old != rule:
                put_changed_fields(tx, rule_id, old, rule)
        if current.order != layer.order:
            _rewrite_order(tx, layer_id, layer.order)


def _rewrite_order(tx: Any, layer_id: bytes, order: list[str]) -> None:
    # Rewritten in place rather than replaced by a new list: a rule that another
    # session inserts concurrently then stays in the list the layer keeps.
    order_id = child_id(tx, layer_id, "order")
    if order_id is None:
        put_value(tx, layer_id, "order", order)
        return
    for index in reversed(range(tx.length(order_id))):
        tx.delete(order_id, index)
    for index, uid in enumerate(order):
        insert_value(tx, order_id, index, uid)


def put_changed_fields(tx: Any, obj: bytes, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    # Field-level writes: concurrent edits of different fields of one record both survive.
    for key, value in new.items():
        if old.get(key) != value or key not in old:
            put_value(tx, obj, key, value)
    for key in old.keys() - new.keys():
        tx.delete(obj, key)
