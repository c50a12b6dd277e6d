"""A rulebase reply (`show-access-rulebase` with its objects dictionary) as the command
line shows it: sections as heading rows, rules with the names of what they refer to."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

COLUMNS = ["No.", "Name", "Source", "Destination", "Service", "Action", "Track", "Enabled"]


def table_rows(reply: Mapping[str, Any]) -> list[list[Any]]:
    """One row per rule, in order, and one heading row per access section."""
    names = {o["uid"]: o.get("name") or o["uid"] for o in reply.get("objects-dictionary", [])}

    def cells(values: Any) -> str:
        items = values if isinstance(values, list) else [values]
        return ", ".join(str(names.get(_uid(v), _uid(v))) for v in items if v is not None)

    rows: list[list[Any]] = []
    for entry in _entries(reply.get("rulebase", [])):
        if entry.get("type") == "access-section":
            rows.append(["", f"[{entry.get('name', '')}]", "", "", "", "", "", ""])
            continue
        track = entry.get("track")
        rows.append(
            [
                entry.get("rule-number"),
                entry.get("name"),
                cells(entry.get("source", [])),
                cells(entry.get("destination", [])),
                cells(entry.get("service", [])),
                cells(entry.get("action")),
                cells(track.get("type") if isinstance(track, Mapping) else track),
                entry.get("enabled"),
            ]
        )
    return rows


def _entries(rulebase: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Sections, then the rules inside each, in order."""
    for entry in rulebase:
        yield entry
        if entry.get("type") == "access-section":
            yield from entry.get("rulebase", [])


def _uid(value: Any) -> Any:
    """A reference given as a uid, or as an object with one (`details-level` full)."""
    return value.get("uid", value.get("name")) if isinstance(value, Mapping) else value
