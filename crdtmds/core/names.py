"""Names and free text: what an object, rule or session may be called, what comments and
descriptions may hold, and how stored text is shown safely on a terminal.

Pure functions over plain strings, no I/O. A check either returns the normalized text or
raises a `CrdtmdsError` subclass with a stable code.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from crdtmds.errors import InvalidParameter, ValidationError

ANY_NAME = "Any"
"""The predefined object rules may use in any column; no other object may take its name."""

MAX_NAME_LENGTH = 128
MAX_TEXT_LENGTH = 4096

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Control, format (bidi overrides, zero-width joiners) and line/paragraph separators:
characters that drive a terminal, reorder the text around them or start a new line."""
TEXT_LAYOUT = "\t\n"
"""The only unsafe characters free text (comments, descriptions) may hold."""
_UID_SHAPE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
"""What `new_uid` makes, in either letter case (clients treat both as uids)."""
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def check_string(
    value: Any, field: str, *, limit: int = MAX_TEXT_LENGTH, allowed: str = TEXT_LAYOUT
) -> str:
    """A string of at most `limit` characters with no unsafe character but those `allowed`."""
    if not isinstance(value, str):
        raise InvalidParameter(f"'{field}' must be a string", details={"parameter": field})
    if not _is_utf8_text(value):
        raise InvalidParameter(
            f"'{field}' is not valid Unicode text (lone surrogate)", details={"parameter": field}
        )
    if len(value) > limit:
        raise ValidationError(f"'{field}' is longer than {limit} characters")
    _check_characters(value, field, allowed)
    return value


def _check_characters(value: str, field: str, allowed: str) -> None:
    position, char = first_unsafe_character(value, allowed)
    if char:
        code = character_code(char)
        raise ValidationError(
            f"'{field}' must not contain control or format characters: "
            f"{code} ({escape_text(char)}) at position {position + 1}",
            details={"parameter": field, "character": code},
        )


def first_unsafe_character(text: str, allowed: str = "") -> tuple[int, str]:
    """The index and the first character of `text` in UNSAFE_CATEGORIES and not in
    `allowed`; (-1, "") when there is none."""
    if text.isprintable():  # fast path: every unsafe character is unprintable
        return -1, ""
    for position, char in enumerate(text):
        if char not in allowed and unicodedata.category(char) in UNSAFE_CATEGORIES:
            return position, char
    return -1, ""


def character_code(char: str) -> str:
    return f"U+{ord(char):04X}"


def escape_text(text: str) -> str:
    """`text` with every unsafe character written as a visible escape (\\x1b, \\n,
    \\u202e), for terminals and logs: stored text may predate validation or come
    from an older peer, so output never trusts it."""
    if first_unsafe_character(text)[1] == "":
        return text
    return "".join(_escape_character(c) for c in text)


def _escape_character(char: str) -> str:
    if unicodedata.category(char) not in UNSAFE_CATEGORIES:
        return char
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _is_utf8_text(value: str) -> bool:
    # JSON may carry "\ud800"; Automerge stores UTF-8 and would fail mid-transaction.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_label(value: Any, field: str, *, limit: int = MAX_NAME_LENGTH) -> str:
    """One line of text that may be empty (rule and session names), stripped."""
    return check_string(value, field, limit=limit, allowed="").strip()


def check_name(value: Any, field: str = "name") -> str:
    """The name of an object, tag, administrator, domain or server, stripped.

    Besides the characters `check_label` refuses, a name must not be mistaken for the
    predefined "Any" (whatever its letter case) or for a uid: references accept a name
    or a uid alike, and the CLI sends anything shaped like a uid as one.
    """
    name = check_label(value, field)
    if not name:
        raise ValidationError(f"'{field}' must not be empty", details={"parameter": field})
    if name.casefold() == ANY_NAME.casefold():
        raise ValidationError(
            f"'{ANY_NAME}' is a reserved name, in any letter case", details={"parameter": field}
        )
    if _UID_SHAPE.fullmatch(name):
        raise ValidationError(
            f"'{field}' must not look like a uid: {name}", details={"parameter": field}
        )
    return name
