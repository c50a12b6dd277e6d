"""Validation rules of the policy model, checked directly and through a Session.

Every rejection through a session must carry the documented error code and write
nothing: neither the live domain nor the session's draft may change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crdtmds.core import model
from crdtmds.core.docdata import read
from crdtmds.core.domain import Domain
from crdtmds.core.session import Session
from crdtmds.errors import CrdtmdsError

VALIDATION = "err_validation_failed"
NAME_IN_USE = "err_name_in_use"
NOT_FOUND = "generic_err_object_not_found"
IN_USE = "err_object_in_use"
MISSING = "generic_err_missing_required_parameters"
INVALID = "generic_err_invalid_parameter"


@pytest.fixture
def domain() -> Domain:
    """A domain with a few published objects and one published rule."""
    domain = Domain.create("acme", "doc-model")
    setup = Session.open(domain, admin="setup", server="s1")
    setup.add_object("host", {"name": "web", "ipv4-address": "10.0.0.1"})
    setup.add_object("host", {"name": "db", "ipv4-address": "10.0.0.2"})
    setup.add_object("network", {"name": "lan", "subnet4": "10.0.0.0", "mask-length4": 24})
    setup.add_object("service-tcp", {"name": "https", "port": 443})
    setup.add_object("group", {"name": "servers", "members": ["web"]})
    setup.add_rule({"name": "r1", "source": ["web"], "service": ["https"], "action": "Accept"})
    setup.publish_in_memory("base")
    return domain


@pytest.fixture
def session(domain: Domain) -> Session:
    return Session.open(domain, admin="alice", server="s1")


def rejects(session: Session, code: str, edit: Callable[..., Any], *args: Any) -> CrdtmdsError:
    """Call `edit(*args)`, expect a CrdtmdsError with `code`, and check that nothing was written."""
    session.take_unsaved_changes()
    live_heads = session.domain.heads()
    live_content = read(session.domain.doc)
    own = session.stored_edits
    rulebase = session.view.rulebase()
    objects = dict(session.view.objects)
    with pytest.raises(CrdtmdsError) as caught:
        edit(*args)
    assert caught.value.code == code, caught.value
    assert session.domain.heads() == live_heads
    assert read(session.domain.doc) == live_content
    assert session.stored_edits == own
    assert session.take_unsaved_changes() == []
    assert session.view.rulebase() == rulebase
    assert session.view.objects == objects
    return caught.value


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["", "   ", "Any", "x" * 129])
def test_bad_names_are_rejected(session: Session, name: str) -> None:
    rejects(
        session, VALIDATION, session.add_object, "host", {"name": name, "ip-address": "1.1.1.1"}
    )


def test_missing_name(session: Session) -> None:
    rejects(session, MISSING, session.add_object, "host", {"ip-address": "1.1.1.1"})
    rejects(session, MISSING, session.add_object, "host", {"name": None, "ip-address": "1.1.1.1"})


def test_name_must_be_a_string(session: Session) -> None:
    rejects(session, INVALID, session.add_object, "host", {"name": 5, "ip-address": "1.1.1.1"})


def test_longest_name_and_surrounding_blanks(session: Session) -> None:
    record = session.add_object("host", {"name": "x" * 128, "ip-address": "1.1.1.1"})
    assert record["name"] == "x" * 128
    assert session.add_object("host", {"name": "  spaced  ", "ip-address": "1.1.1.2"})["name"] == (
        "spaced"
    )


@pytest.mark.parametrize("name", ["web", " web ", "https"])
def test_name_in_use_by_a_published_object_of_any_type(session: Session, name: str) -> None:
    error = rejects(
        session, NAME_IN_USE, session.add_object, "host", {"name": name, "ip-address": "1.1.1.1"}
    )
    assert error.details["name"] == name.strip()
    assert error.details["uid"] == session.view.find_object(name.strip())["uid"]


def test_name_in_use_by_an_object_of_the_same_draft(session: Session) -> None:
    session.add_object("service-udp", {"name": "dns", "port": 53})
    rejects(
        session, NAME_IN_USE, session.add_object, "host", {"name": "dns", "ip-address": "1.1.1.1"}
    )


def test_another_sessions_draft_does_not_hold_a_name(domain: Domain, session: Session) -> None:
    other = Session.open(domain, admin="bob", server="s2")
    other.add_object("host", {"name": "new", "ip-address": "1.1.1.1"})
    assert session.add_object("host", {"name": "new", "ip-address": "1.1.1.2"})["name"] == "new"


def test_rename_rules(session: Session) -> None:
    rejects(session, NAME_IN_USE, session.set_object, "host", {"name": "web", "new-name": "db"})
    rejects(session, VALIDATION, session.set_object, "host", {"name": "web", "new-name": " "})
    rejects(session, VALIDATION, session.set_object, "host", {"name": "web", "new-name": "Any"})
    # Renaming to its own name is no change; renaming frees the old name.
    assert session.set_object("host", {"name": "web", "new-name": "web"})["name"] == "web"
    renamed = session.set_object("host", {"name": "web", "new-name": "www"})
    assert renamed["name"] == "www"
    assert session.view.find_object("web") is None
    added = session.add_object("host", {"name": "web", "ip-address": "10.0.0.9"})
    assert added["uid"] != renamed["uid"]


def test_delete_frees_the_name(session: Session) -> None:
    session.delete_object("host", {"name": "db"})
    assert session.add_object("service-tcp", {"name": "db", "port": 5432})["type"] == "service-tcp"


# ---------------------------------------------------------------- ports


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (80, "80"),
        ("443", "443"),
        (1, "1"),
        (65535, "65535"),
        ("8080-8090", "8080-8090"),
        (" 22 ", "22"),
        ("53-53", "53"),
        ("1-65535", "1-65535"),
        ("0080", "80"),
    ],
)
def test_valid_ports(given: Any, stored: str) -> None:
    assert model.check_port(given) == stored


@pytest.mark.parametrize(
    "port",
    [0, "0", -1, 65536, 70000, "70000", "8090-8080", "0-10", "10-70000", "abc", "", "80-",
     "-80", "80-90-100", "1.5", "8 0", "١٢٣", "100000"],
)  # fmt: skip
def test_invalid_ports(session: Session, port: Any) -> None:
    with pytest.raises(CrdtmdsError) as caught:
        model.check_port(port)
    assert caught.value.code == VALIDATION
    for service in ("service-tcp", "service-udp"):
        rejects(session, VALIDATION, session.add_object, service, {"name": "svc", "port": port})
    rejects(session, VALIDATION, session.set_object, "service-tcp", {"name": "https", "port": port})


@pytest.mark.parametrize("port", [True, 8.0, [80], {"port": 80}])
def test_ports_of_the_wrong_type(session: Session, port: Any) -> None:
    rejects(session, INVALID, session.add_object, "service-tcp", {"name": "svc", "port": port})


def test_service_needs_a_port(session: Session) -> None:
    rejects(session, MISSING, session.add_object, "service-udp", {"name": "svc"})


def test_port_range_is_stored_normalized(session: Session) -> None:
    record = session.add_object("service-udp", {"name": "rtp", "port": " 10000-20000 "})
    assert record["port"] == "10000-20000"
    assert session.set_object("service-tcp", {"name": "https", "port": 8443})["port"] == "8443"


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("params", "field", "stored"),
    [
        ({"ipv4-address": "192.168.1.1"}, "ipv4-address", "192.168.1.1"),
        ({"ipv6-address": "2001:DB8::1"}, "ipv6-address", "2001:db8::1"),
        ({"ip-address": "172.16.0.1"}, "ipv4-address", "172.16.0.1"),
        ({"ip-address": "2001:db8:0:0::2"}, "ipv6-address", "2001:db8::2"),
        ({"ip-address": " 8.8.8.8 "}, "ipv4-address", "8.8.8.8"),
    ],
)
def test_valid_host_addresses(
    session: Session, params: dict[str, str], field: str, stored: str
) -> None:
    record = session.add_object("host", {"name": "h", **params})
    assert record[field] == stored
    assert session.view.find_object("h") == record


def test_dual_stack_host(session: Session) -> None:
    record = session.add_object(
        "host", {"name": "h", "ipv4-address": "10.1.1.1", "ipv6-address": "fd00::1"}
    )
    assert (record["ipv4-address"], record["ipv6-address"]) == ("10.1.1.1", "fd00::1")


@pytest.mark.parametrize(
    "params",
    [
        {"ipv4-address": "10.0.0.256"},
        {"ipv4-address": "10.0.0"},
        {"ipv4-address": "abc"},
        {"ipv4-address": ""},
        {"ipv4-address": "10.0.0.0/24"},
        {"ipv4-address": "2001:db8::1"},
        {"ipv6-address": "10.0.0.1"},
        {"ipv6-address": "2001:db8::g"},
        {"ipv6-address": "fe80::1%eth0"},
        {"ip-address": "1.2.3.4.5"},
        {"ip-address": "not an address"},
    ],
)
def test_invalid_host_addresses(session: Session, params: dict[str, str]) -> None:
    rejects(session, VALIDATION, session.add_object, "host", {"name": "h", **params})
    rejects(session, VALIDATION, session.set_object, "host", {"name": "web", **params})


def test_host_address_of_the_wrong_type(session: Session) -> None:
    rejects(session, INVALID, session.add_object, "host", {"name": "h", "ipv4-address": 167772161})


def test_host_needs_an_address(session: Session) -> None:
    rejects(session, MISSING, session.add_object, "host", {"name": "h"})


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize(
    ("params", "version", "subnet", "mask"),
    [
        ({"subnet4": "192.168.0.0", "mask-length4": 16}, 4, "192.168.0.0", 16),
        ({"subnet4": "10.1.2.0", "mask-length4": "24"}, 4, "10.1.2.0", 24),
        ({"subnet": "10.2.0.0", "mask-length": 15}, 4, "10.2.0.0", 15),
        ({"subnet": "10.3.0.0", "subnet-mask": "255.255.0.0"}, 4, "10.3.0.0", 16),
        ({"subnet": "2001:db8::", "mask-length": 32}, 6, "2001:db8::", 32),
        ({"subnet6": "FD00::", "mask-length6": 8}, 6, "fd00::", 8),
        ({"subnet4": "0.0.0.0", "mask-length4": 0}, 4, "0.0.0.0", 0),
        ({"subnet4": "10.9.9.9", "mask-length4": 32}, 4, "10.9.9.9", 32),
        ({"subnet6": "fd00::1", "mask-length6": 128}, 6, "fd00::1", 128),
    ],
)
def test_valid_networks(
    session: Session, params: dict[str, Any], version: int, subnet: str, mask: int
) -> None:
    record = session.add_object("network", {"name": "n", **params})
    assert (record[f"subnet{version}"], record[f"mask-length{version}"]) == (subnet, mask)


@pytest.mark.parametrize(
    "params",
    [
        {"subnet4": "10.0.0.1", "mask-length4": 24},
        {"subnet4": "11.0.0.0", "mask-length4": 7},
        {"subnet6": "2001:db8::1", "mask-length6": 64},
        {"subnet4": "10.0.0.0", "mask-length4": 33},
        {"subnet4": "10.0.0.0", "mask-length4": -1},
        {"subnet4": "10.0.0.0", "mask-length4": "abc"},
        {"subnet4": "10.0.0.0", "mask-length4": "²"},
        {"subnet4": "10.0.0.0", "mask-length4": 24.0},
        {"subnet4": "10.0.0.0", "mask-length4": True},
        {"subnet6": "fd00::", "mask-length6": 129},
        {"subnet4": "fd00::", "mask-length4": 8},
        {"subnet6": "10.0.0.0", "mask-length6": 8},
        {"subnet4": "10.0.0.300", "mask-length4": 24},
        {"subnet": "10.0.0.0", "subnet-mask": "255.0.255.0"},
        {"subnet": "10.0.0.0", "subnet-mask": "ffff::"},
    ],
)
def test_invalid_networks(session: Session, params: dict[str, Any]) -> None:
    rejects(session, VALIDATION, session.add_object, "network", {"name": "n", **params})


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"subnet4": "10.0.0.0"},
        {"mask-length4": 24},
        {"subnet6": "fd00::"},
        {"mask-length6": 64},
    ],
)
def test_incomplete_networks(session: Session, params: dict[str, Any]) -> None:
    rejects(session, MISSING, session.add_object, "network", {"name": "n", **params})


def test_set_network_checks_the_resulting_subnet(session: Session) -> None:
    rejects(session, VALIDATION, session.set_object, "network", {"name": "lan", "mask-length4": 4})
    rejects(
        session, VALIDATION, session.set_object, "network", {"name": "lan", "subnet4": "10.0.0.128"}
    )
    record = session.set_object("network", {"name": "lan", "mask-length4": 25})
    assert (record["subnet4"], record["mask-length4"]) == ("10.0.0.0", 25)


# ---------------------------------------------------------------- address ranges


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ipv4-address-first": "10.0.0.1", "ipv4-address-last": "10.0.0.9"},
         {"ipv4-address-first": "10.0.0.1", "ipv4-address-last": "10.0.0.9"}),
        ({"ip-address-first": "10.0.0.5", "ip-address-last": "10.0.0.5"},
         {"ipv4-address-first": "10.0.0.5", "ipv4-address-last": "10.0.0.5"}),
        ({"ip-address-first": "fd00::1", "ip-address-last": "fd00::ff"},
         {"ipv6-address-first": "fd00::1", "ipv6-address-last": "fd00::ff"}),
        ({"ipv4-address-first": "10.0.0.9", "ipv4-address-last": "10.0.1.0"},
         {"ipv4-address-first": "10.0.0.9", "ipv4-address-last": "10.0.1.0"}),
    ],
)  # fmt: skip
def test_valid_ranges(session: Session, params: dict[str, str], expected: dict[str, str]) -> None:
    record = session.add_object("address-range", {"name": "r", **params})
    assert {k: record[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"ipv4-address-first": "10.0.0.9", "ipv4-address-last": "10.0.0.1"}, VALIDATION),
        ({"ip-address-first": "10.0.1.0", "ip-address-last": "10.0.0.255"}, VALIDATION),
        ({"ipv6-address-first": "fd00::2", "ipv6-address-last": "fd00::1"}, VALIDATION),
        ({"ip-address-first": "10.0.0.1", "ip-address-last": "fd00::1"}, VALIDATION),
        ({"ipv4-address-first": "10.0.0.1", "ipv6-address-last": "fd00::1"}, VALIDATION),
        ({"ipv4-address-first": "fd00::1", "ipv4-address-last": "fd00::2"}, VALIDATION),
        ({"ipv4-address-first": "10.0.0.1", "ipv4-address-last": "garbage"}, VALIDATION),
        ({"ipv4-address-first": "10.0.0.1"}, MISSING),
        ({"ipv6-address-last": "fd00::1"}, MISSING),
        ({}, MISSING),
    ],
)
def test_invalid_ranges(session: Session, params: dict[str, str], code: str) -> None:
    rejects(session, code, session.add_object, "address-range", {"name": "r", **params})


def test_set_range_keeps_its_order(session: Session) -> None:
    session.add_object(
        "address-range",
        {"name": "r", "ipv4-address-first": "10.0.0.10", "ipv4-address-last": "10.0.0.20"},
    )
    rejects(
        session,
        VALIDATION,
        session.set_object,
        "address-range",
        {"name": "r", "ipv4-address-first": "10.0.0.21"},
    )
    record = session.set_object("address-range", {"name": "r", "ipv4-address-first": "10.0.0.20"})
    assert record["ipv4-address-first"] == "10.0.0.20"


# ---------------------------------------------------------------- groups


def test_group_members_by_name_and_uid(session: Session) -> None:
    web = session.view.find_object("web")
    members = [web["uid"], "lan", "servers", "web"]
    record = session.add_object("group", {"name": "g", "members": members})
    lan, servers = session.view.find_object("lan"), session.view.find_object("servers")
    assert record["members"] == [web["uid"], lan["uid"], servers["uid"]]
    assert session.add_object("group", {"name": "one", "members": "db"})["members"] == [
        session.view.find_object("db")["uid"]
    ]
    assert session.add_object("group", {"name": "empty"})["members"] == []


@pytest.mark.parametrize(
    ("members", "code"),
    [
        (["ghost"], VALIDATION),
        (["https"], VALIDATION),
        (["web", "https"], VALIDATION),
        (["Any"], VALIDATION),
        ([model.ANY_UID], VALIDATION),
        ([5], INVALID),
        ([""], INVALID),
        ({"web": 1}, INVALID),
        (7, INVALID),
    ],
)
def test_invalid_group_members(session: Session, members: Any, code: str) -> None:
    rejects(session, code, session.add_object, "group", {"name": "g", "members": members})
    rejects(session, code, session.set_object, "group", {"name": "servers", "members": members})


def test_group_cycles_are_rejected(session: Session) -> None:
    session.add_object("group", {"name": "a", "members": ["servers"]})
    session.add_object("group", {"name": "b", "members": ["a"]})
    rejects(
        session,
        VALIDATION,
        session.set_object,
        "group",
        {"name": "servers", "members": ["servers"]},
    )
    rejects(session, VALIDATION, session.set_object, "group", {"name": "a", "members": ["b"]})
    rejects(
        session,
        VALIDATION,
        session.set_object,
        "group",
        {"name": "servers", "members": ["web", "b"]},
    )
    # A diamond is not a cycle.
    record = session.add_object("group", {"name": "top", "members": ["a", "b", "servers"]})
    assert len(record["members"]) == 3


# ---------------------------------------------------------------- rules


def test_rule_defaults_and_any(session: Session) -> None:
    rule = session.add_rule({"name": "d"})
    assert rule["source"] == rule["destination"] == rule["service"] == [model.ANY_UID]
    assert (rule["action"], rule["track"], rule["enabled"]) == ("Drop", "None", True)
    rule = session.add_rule({"source": ["Any"], "destination": [], "service": model.ANY_UID})
    assert rule["source"] == rule["destination"] == rule["service"] == [model.ANY_UID]


def test_rule_columns_accept_their_types(session: Session) -> None:
    rule = session.add_rule(
        {"source": ["web", "lan", "servers"], "destination": "db", "service": ["https"]}
    )
    names = ("web", "lan", "servers", "db", "https")
    uid = {name: session.view.find_object(name)["uid"] for name in names}
    assert rule["source"] == [uid["web"], uid["lan"], uid["servers"]]
    assert rule["destination"] == [uid["db"]]
    assert rule["service"] == [uid["https"]]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"source": ["https"]}, VALIDATION),
        ({"destination": ["ghost"]}, VALIDATION),
        ({"source": ["Any", "web"]}, VALIDATION),
        ({"service": ["web"]}, VALIDATION),
        ({"service": ["servers"]}, VALIDATION),
        ({"service": ["https", "Any"]}, VALIDATION),
        ({"source": [3]}, INVALID),
        ({"source": {"web": True}}, INVALID),
        ({"action": "Allow"}, VALIDATION),
        ({"action": 1}, VALIDATION),
        ({"track": "Alert"}, VALIDATION),
        ({"track": {"type": "Mail"}}, VALIDATION),
        ({"enabled": "true"}, INVALID),
        ({"enabled": 1}, INVALID),
        ({"comments": 5}, INVALID),
        ({"comments": "x" * 4097}, VALIDATION),
        ({"name": "x" * 129}, VALIDATION),
        ({"layer": "Nope"}, NOT_FOUND),
        ({"layer": 5}, INVALID),
    ],
)
def test_invalid_rules(session: Session, params: dict[str, Any], code: str) -> None:
    rejects(session, code, session.add_rule, params)
    r1 = session.view.rulebase()[0]["uid"]
    rejects(session, code, session.set_rule, {"uid": r1, **params})


@pytest.mark.parametrize(
    ("given", "stored"),
    [("accept", "Accept"), ("DROP", "Drop"), ("Reject", "Reject")],
)
def test_actions(session: Session, given: str, stored: str) -> None:
    assert session.add_rule({"action": given})["action"] == stored


@pytest.mark.parametrize(
    ("given", "stored"), [("log", "Log"), ("None", "None"), ({"type": "Log"}, "Log")]
)
def test_tracks(session: Session, given: Any, stored: str) -> None:
    assert session.add_rule({"track": given})["track"] == stored


def test_enabled_is_stored_as_a_boolean(session: Session) -> None:
    rule = session.add_rule({"name": "off", "enabled": False})
    assert rule["enabled"] is False
    layer = session.view.get_layer()
    session.publish_in_memory()
    stored = read(session.domain.doc)["layers"][layer.uid]["rules"][rule["uid"]]
    assert stored["enabled"] is False


@pytest.mark.parametrize(
    ("given", "checked"),
    [("top", "top"), ("bottom", "bottom"), (1, 1), ("3", 3), ({"above": "r1"}, {"above": "r1"}),
     ({"below": 2}, {"below": 2})],
)  # fmt: skip
def test_valid_positions(given: Any, checked: Any) -> None:
    assert model.check_position(given) == checked


@pytest.mark.parametrize(
    ("position", "code"),
    [
        (0, VALIDATION),
        (-1, VALIDATION),
        ("0", VALIDATION),
        ("middle", INVALID),
        ("-1", INVALID),
        ("²", INVALID),
        (1.5, INVALID),
        (True, INVALID),
        (None, INVALID),
        ({"above": "r1", "below": "r1"}, INVALID),
        ({"beside": "r1"}, INVALID),
        ({"above": ["r1"]}, INVALID),
        ({"above": "ghost"}, NOT_FOUND),
        ({"below": 9}, NOT_FOUND),
    ],
)
def test_invalid_positions(session: Session, position: Any, code: str) -> None:
    rejects(session, code, session.add_rule, {"name": "p", "position": position})
    # A bad new-position rejects the whole set, including its field changes.
    rejects(
        session,
        code,
        session.set_rule,
        {"name": "r1", "action": "Reject", "new-position": position},
    )


def test_rule_cannot_move_relative_to_itself(session: Session) -> None:
    session.add_rule({"name": "r2", "position": "bottom"})
    for ref in ("r1", 1, session.view.rulebase()[0]["uid"]):
        rejects(
            session, VALIDATION, session.set_rule, {"name": "r1", "new-position": {"below": ref}}
        )


# ---------------------------------------------------------------- common fields and lookups


def test_color_tags_comments(session: Session) -> None:
    record = session.add_object(
        "host",
        {"name": "h", "ip-address": "1.1.1.1", "color": "Dark Green", "tags": ["b", "a", "b"],
         "comments": "hello"},
    )  # fmt: skip
    assert (record["color"], record["tags"], record["comments"]) == (
        "dark green",
        ["a", "b"],
        "hello",
    )
    solo = session.add_object("host", {"name": "i", "ip-address": "1.1.1.2", "tags": "solo"})
    assert solo["tags"] == ["solo"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"color": "chartreuse"}, VALIDATION),
        ({"color": 3}, INVALID),
        ({"tags": [""]}, VALIDATION),
        ({"tags": 3}, INVALID),
        ({"tags": [3]}, INVALID),
        ({"comments": "x" * 4097}, VALIDATION),
        ({"comments": None}, INVALID),
    ],
)
def test_invalid_common_fields(session: Session, params: dict[str, Any], code: str) -> None:
    rejects(
        session, code, session.add_object, "host", {"name": "h", "ip-address": "1.1.1.1", **params}
    )
    rejects(session, code, session.set_object, "host", {"name": "web", **params})


def test_text_that_cannot_be_stored(session: Session) -> None:
    bad = "x\ud800"  # a lone surrogate: valid in JSON, not encodable as UTF-8
    host = {"name": "h", "ip-address": "1.1.1.1"}
    rejects(session, INVALID, session.add_object, "host", {**host, "name": bad})
    rejects(session, INVALID, session.add_object, "host", {**host, "comments": bad})
    rejects(session, INVALID, session.add_object, "host", {**host, "tags": [bad]})
    rejects(session, INVALID, session.set_object, "host", {"name": "web", "new-name": bad})
    rejects(session, INVALID, session.add_rule, {"name": bad})
    rejects(session, INVALID, session.set_rule, {"name": "r1", "comments": bad})
    rejects(session, INVALID, session.publish, bad, b"\x01" * 16)


def test_unknown_object_type(session: Session) -> None:
    rejects(session, INVALID, session.add_object, "router", {"name": "r"})


def test_lookups_that_fail(session: Session) -> None:
    rejects(session, NOT_FOUND, session.set_object, "host", {"name": "ghost", "comments": "x"})
    rejects(session, NOT_FOUND, session.set_object, "service-tcp", {"name": "web", "port": 1})
    rejects(session, NOT_FOUND, session.delete_object, "host", {"name": "ghost"})
    rejects(session, NOT_FOUND, session.delete_object, "network", {"name": "web"})
    rejects(session, INVALID, session.set_object, "host", {"comments": "x"})
    rejects(session, INVALID, session.delete_object, "host", {"uid": 5})
    rejects(session, NOT_FOUND, session.set_rule, {"name": "ghost", "action": "Drop"})
    rejects(session, NOT_FOUND, session.set_rule, {"rule-number": 7, "action": "Drop"})
    rejects(session, NOT_FOUND, session.delete_rule, {"rule-number": 0})
    rejects(session, INVALID, session.set_rule, {"action": "Drop"})
    rejects(session, INVALID, session.delete_rule, {})


def test_objects_in_use_cannot_be_deleted(session: Session) -> None:
    web = session.view.find_object("web")
    error = rejects(session, IN_USE, session.delete_object, "host", {"name": "web"})
    kinds = sorted((u["type"], u.get("column", "")) for u in error.details["where-used"])
    assert kinds == [("access-rule", "source"), ("group", "")]
    assert all(u["uid"] != web["uid"] for u in error.details["where-used"])


# ---------------------------------------------------------------- pure helpers


def test_effective_order_keeps_first_occurrence_and_drops_unknown() -> None:
    rules = {"a": {}, "b": {}, "c": {}, "d": {}}
    assert model.effective_order(["b", "a", "b", "gone", "a", "c"], rules) == ["b", "a", "c", "d"]
    assert model.effective_order([], {"z": {}, "y": {}}) == ["y", "z"]


def test_resolve_references_keeps_order_and_drops_repeats() -> None:
    objects = {"u1": {"uid": "u1", "type": "host"}, "u2": {"uid": "u2", "type": "network"}}
    found = model.resolve_references(["u2", "u1", "u2"], "source", model.NETWORK_TYPES, objects.get)
    assert found == ["u2", "u1"]


def test_build_object_is_pure() -> None:
    existing = {"uid": "u", "type": "host", "name": "h", "comments": "", "color": "black",
                "tags": [], "ipv4-address": "1.1.1.1"}  # fmt: skip
    snapshot = dict(existing)
    updated = model.build_object("host", {"ipv4-address": "2.2.2.2"}, {}.get, existing=existing)
    assert existing == snapshot
    assert updated["ipv4-address"] == "2.2.2.2"
