"""The command line's rulebase table: sections as heading rows, and the names of what
rules refer to (objects, action, track) from the reply's objects dictionary."""

from __future__ import annotations

from crdtmds_cli.rulebase_view import table_rows

ANY, ACCEPT, LOG, WEB = "any-uid", "accept-uid", "log-uid", "web-uid"
DICTIONARY = [
    {"uid": ANY, "name": "Any"},
    {"uid": ACCEPT, "name": "Accept"},
    {"uid": LOG, "name": "Log"},
    {"uid": WEB, "name": "web"},
]


def rule(number: int, name: str, **fields: object) -> dict[str, object]:
    return {
        "type": "access-rule", "rule-number": number, "name": name, "source": [ANY],
        "destination": [WEB], "service": [ANY], "action": ACCEPT,
        "track": {"type": LOG, "per-connection": True}, "enabled": True, **fields,
    }  # fmt: skip


def test_rules_show_names_and_sections_head_their_rules() -> None:
    reply = {
        "rulebase": [
            rule(1, "first"),
            {"type": "access-section", "name": "Servers", "rulebase": [rule(2, "second")]},
        ],
        "objects-dictionary": DICTIONARY,
    }
    assert table_rows(reply) == [
        [1, "first", "Any", "web", "Any", "Accept", "Log", True],
        ["", "[Servers]", "", "", "", "", "", ""],
        [2, "second", "Any", "web", "Any", "Accept", "Log", True],
    ]


def test_unknown_references_show_their_uid_and_full_objects_their_name() -> None:
    reply = {
        "rulebase": [rule(1, "r", action={"uid": "drop-uid", "name": "Drop"}, track="none")],
        "objects-dictionary": [{"uid": "drop-uid", "name": "Drop"}],
    }
    (row,) = table_rows(reply)
    assert row[2] == ANY and row[5] == "Drop" and row[6] == "none"
