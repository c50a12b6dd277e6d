"""Commands of access sections and the layer structure (see `crdtmds.core.sections`)."""

from __future__ import annotations

from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.params import WRITE_EXTRAS, check_ignore_flags, details_level
from crdtmds.api.replies import section_reply
from crdtmds.api.rulebase import layer_structure
from crdtmds.core import sections
from crdtmds.errors import MissingParameter

SECTION_REF = "uid name layer"


async def _add_section(call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        section = session.add_section(call.params)
        layer = session.view.get_layer(call.params.get("layer"))
    return section_reply(section, layer, call.domain_entry())


async def _set_section(call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        section = session.set_section(call.params)
        layer = session.view.get_layer(call.params.get("layer"))
    return section_reply(section, layer, call.domain_entry())


async def _delete_section(call: Call) -> dict[str, Any]:
    check_ignore_flags(call.params)
    async with call.editing() as session:
        session.delete_section(call.params)
    return {"message": "OK"}


async def _show_section(call: Call) -> dict[str, Any]:
    details_level(call.params)
    state, entry = call.read_view()
    layer = state.get_layer(call.params.get("layer"))
    ref = call.params.get("uid", call.params.get("name"))
    if ref is None:
        raise MissingParameter("name the section with 'uid' or 'name'",
                               details={"parameter": "name"})  # fmt: skip
    return section_reply(sections.find_section(layer, ref), layer, entry)


async def _show_layer_structure(call: Call) -> dict[str, Any]:
    details_level(call.params)
    state, _ = call.read_view()
    return layer_structure(state.get_layer(call.params.get("uid", call.params.get("name"))))


COMMANDS: dict[str, Command] = {
    "add-access-section": command(_add_section, Access.WRITE, "name layer position", WRITE_EXTRAS),
    "set-access-section": command(
        _set_section, Access.WRITE, f"{SECTION_REF} new-name new-position", WRITE_EXTRAS
    ),
    "delete-access-section": command(_delete_section, Access.WRITE, SECTION_REF, WRITE_EXTRAS),
    "show-access-section": command(
        _show_section, Access.READ, f"{SECTION_REF} details-level domain"
    ),
    "show-layer-structure": command(
        _show_layer_structure, Access.READ, "uid name details-level domain package limit offset"
    ),
}
