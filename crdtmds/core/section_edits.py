"""A draft's edits of access sections: add, rename or move, delete. A section is a marker
in its layer's order list with its record in the layer's rule map (see
`crdtmds.core.sections`), so these write the same containers a rule edit writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdtmds.core import model, sections
from crdtmds.core.docdata import child_id, insert_value, put_value
from crdtmds.core.draft import Draft
from crdtmds.core.field_writes import put_changed_fields
from crdtmds.errors import InvalidParameter, ObjectNotFound


def add_section(draft: Draft, params: Mapping[str, Any]) -> dict[str, Any]:
    """A new access section at `position` (top by default)."""
    draft.ready_to_edit()
    view = draft.view
    layer = view.get_layer(params.get("layer"))
    position = model.check_position(params.get("position", "top"))
    section = sections.build_section(params)
    index = sections.raw_index(layer, position, view.get_rule)
    rules_id, order_id = draft.layer_ids(layer.uid)

    def write(tx: Any) -> None:
        put_value(tx, rules_id, section["uid"], section)
        insert_value(tx, order_id, index, section["uid"])

    draft.commit(write)
    layer.put_section(section)
    layer.insert_marker(section["uid"], index)
    draft.touched.rules.add((layer.uid, section["uid"]))
    return section


def set_section(draft: Draft, params: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a section (`new-name`) and/or move it (`new-position`)."""
    draft.ready_to_edit()
    view = draft.view
    layer = view.get_layer(params.get("layer"))
    current = sections.find_section(layer, _section_ref(params))
    section = sections.build_section(params, current)
    target = None
    if "new-position" in params:
        position = model.check_position(params["new-position"], "new-position")
        target = sections.raw_index(layer, position, view.get_rule, moving=section["uid"])
    if section != current:
        record_id = child_id(draft.fork, draft.layer_ids(layer.uid)[0], section["uid"])
        if record_id is None:
            raise ObjectNotFound(f"access section '{section['uid']}' not found")
        draft.commit(lambda tx: put_changed_fields(tx, record_id, current, section))
        layer.put_section(section)
        draft.touched.rules.add((layer.uid, section["uid"]))
    if target is not None:
        draft.move_in_order(layer, section["uid"], target)
    return section


def delete_section(draft: Draft, params: Mapping[str, Any]) -> dict[str, Any]:
    """Delete a section; its rules stay where they are (in the section before it)."""
    draft.ready_to_edit()
    layer = draft.view.get_layer(params.get("layer"))
    section = sections.find_section(layer, _section_ref(params))
    rules_id, order_id = draft.layer_ids(layer.uid)
    indices = layer.indices_of(section["uid"])

    def write(tx: Any) -> None:
        tx.delete(rules_id, section["uid"])
        for index in reversed(indices):
            tx.delete(order_id, index)

    draft.commit(write)
    layer.remove_section(section["uid"])
    draft.touched.rules.add((layer.uid, section["uid"]))
    return section


def _section_ref(params: Mapping[str, Any]) -> str:
    ref = params.get("uid", params.get("name"))
    if not isinstance(ref, str) or not ref:
        raise InvalidParameter("name the section with 'uid' or 'name'")
    return ref
