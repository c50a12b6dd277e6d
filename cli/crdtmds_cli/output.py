"""Terminal output that text from a server cannot drive.

Names, comments and error messages come from the server, and through it from other
administrators and older peers; whatever validation they went through, a control,
format or bidi character in them is printed as a visible escape (`\\x1b`, `\\u202e`),
never raw.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from typing import Any

import typer

from crdtmds.core.names import UNSAFE_CATEGORIES, escape_text, first_unsafe_character


def say(text: str, *, err: bool = False) -> None:
    """Print `text` as one line, unsafe characters (line breaks too) escaped."""
    typer.echo(escape_text(text), err=err)


def escape_strings(data: Any) -> Any:
    """`data` (plain JSON-like values) with every string in it, keys too, escaped: for
    text layouts that put several values on one line."""
    if isinstance(data, str):
        return escape_text(data)
    if isinstance(data, dict):
        return {escape_strings(k): escape_strings(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [escape_strings(v) for v in data]
    return data


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """JSON that keeps letters of every script readable but writes each unsafe character
    as a \\u escape: json.dumps escapes only U+0000 to U+001F, which leaves DEL, the C1
    controls (an 8-bit CSI), bidi overrides and line separators raw."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    if not first_unsafe_character(text, "\n")[1]:
        return text
    # Raw unsafe characters can only be inside strings here (json.dumps escaped the
    # ones below U+0020 and put only line breaks between tokens), so escaping keeps
    # the same JSON value.
    return "".join(_json_escape(char) if char != "\n" else char for char in text)


def _json_escape(char: str) -> str:
    if unicodedata.category(char) not in UNSAFE_CATEGORIES:
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def echo_json(data: Any) -> None:
    typer.echo(json_text(data))


def echo_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A plain table: columns padded to their widest cell."""
    cells = [[cell(v) for v in row] for row in rows]
    if not cells:
        say("(none)")
        return
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *cells]:
        say("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))


def cell(value: Any) -> str:
    """One value as table text: lists joined, objects by name, booleans as yes/no."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return escape_text(str(value.get("name") or value.get("uid") or ""))
    return escape_text(str(value))


def echo_record(record: dict[str, Any]) -> None:
    keys = {key: escape_text(key) for key in record}
    width = max((len(k) for k in keys.values()), default=0)
    for key, value in record.items():
        say(f"{keys[key].ljust(width)}  {cell(value)}")


def summary_of(record: dict[str, Any]) -> str:
    """The type-specific part of an object, in one cell."""
    kind = record.get("type")
    if kind == "host":
        return " ".join(filter(None, [record.get("ipv4-address"), record.get("ipv6-address")]))
    if kind == "network":
        parts = [
            f"{record[f'subnet{v}']}/{record[f'mask-length{v}']}"
            for v in (4, 6)
            if f"subnet{v}" in record
        ]
        return " ".join(parts)
    if kind == "address-range":
        return " ".join(
            f"{record[f'ipv{v}-address-first']}-{record[f'ipv{v}-address-last']}"
            for v in (4, 6)
            if f"ipv{v}-address-first" in record
        )
    if kind == "group":
        return cell(record.get("members", []))
    if kind in ("service-tcp", "service-udp"):
        return f"{kind.removeprefix('service-')}/{record.get('port', '')}"
    if kind == "access-rule":
        source, destination, service = (
            cell(record.get(column, [])) for column in ("source", "destination", "service")
        )
        return f"{source} -> {destination} ({service}): {record.get('action', '')}"
    return ""
