"""Sessions: private drafts of a domain, their edits, show-changes, publish, discard,
revert, restore after a restart, and what concurrent publishes leave behind."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from automerge.core import Document
from hypothesis import given
from hypothesis import strategies as st

from crdtmds.core import model
from crdtmds.core.docdata import (
    ROOT,
    child_id,
    fork_with_actor,
    hex_heads,
    new_actor,
    put_value,
    read,
    rebuild_at,
)
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.draft import PublishConflict
from crdtmds.core.session import Session
from crdtmds.core.session_diff import moved_rules
from crdtmds.errors import CrdtmdsError


def full_read(doc: Document) -> DomainState:
    return DomainState.from_plain(read(doc))


def assert_view_is_fork(session: Session) -> None:
    """The session's view says exactly what its publish writes (tried on a copy of the
    live document, restored from the stored edits)."""
    copy = Domain(session.domain.document_id, session.domain.doc.fork())
    trial = Session.restore(
        copy, uid=session.uid, admin=session.admin, server=session.server,
        base_heads=session.base_heads, changes=session.stored_edits,
    )  # fmt: skip
    assert trial.view == session.view
    trial.publish_in_memory()
    written = full_read(copy.doc)
    assert (written.objects, written.layers) == (session.view.objects, session.view.layers)


def second_server(domain: Domain) -> Domain:
    """The same domain on another server: a copy of its live document."""
    return Domain(domain.document_id, domain.doc.fork())


def sync(*domains: Domain) -> None:
    """Bring every copy of the domain up to date with the others (gossip)."""
    for one in domains:
        for other in domains:
            if one is not other:
                one.doc.merge(other.doc)


def rule_names(state: DomainState) -> list[str]:
    return [rule["name"] for rule in state.rulebase()]


def publish(session: Session, comments: str = "") -> dict[str, Any]:
    return session.publish_in_memory(comments)


@pytest.fixture
def domain() -> Domain:
    """A published base: hosts web and db, a network, a service, a group, rules A, B, C."""
    domain = Domain.create("acme", "doc-session")
    setup = Session.open(domain, admin="setup", server="s1")
    setup.add_object("host", {"name": "web", "ipv4-address": "10.0.0.1"})
    setup.add_object("host", {"name": "db", "ipv4-address": "10.0.0.2"})
    setup.add_object("network", {"name": "lan", "subnet4": "10.0.0.0", "mask-length4": 24})
    setup.add_object("service-tcp", {"name": "https", "port": 443})
    setup.add_object("group", {"name": "servers", "members": ["web"]})
    for name in "ABC":
        setup.add_rule({"name": name, "position": "bottom", "source": ["lan"]})
    publish(setup, "base")
    return domain


@pytest.fixture
def session(domain: Domain) -> Session:
    return Session.open(domain, admin="alice", server="s1", name="work")


# ---------------------------------------------------------------- objects


OBJECT_CASES = [
    ("host", {"ipv4-address": "10.1.0.1"}, {"ipv6-address": "fd00::1"}, "ipv6-address", "fd00::1"),
    ("network", {"subnet4": "10.2.0.0", "mask-length4": 16}, {"mask-length4": 15},
     "mask-length4", 15),
    ("address-range", {"ipv4-address-first": "10.3.0.1", "ipv4-address-last": "10.3.0.9"},
     {"ipv4-address-last": "10.3.0.20"}, "ipv4-address-last", "10.3.0.20"),
    ("group", {"members": ["web"]}, {"members": ["web", "db"]}, "members", None),
    ("service-tcp", {"port": 8080}, {"port": "8080-8090"}, "port", "8080-8090"),
    ("service-udp", {"port": "53"}, {"port": 5353}, "port", "5353"),
]  # fmt: skip


@pytest.mark.parametrize(("obj_type", "add", "change", "field", "value"), OBJECT_CASES)
def test_add_set_delete_each_object_type(
    domain: Domain, session: Session, obj_type: str, add: dict, change: dict, field: str, value: Any
) -> None:
    if value is None:
        value = [session.view.find_object(n)["uid"] for n in change[field]]
    added = session.add_object(obj_type, {"name": "obj", "comments": "new", **add})
    assert added["type"] == obj_type
    assert session.view.objects[added["uid"]] == added
    assert session.show_changes()["added"] == [added]
    assert_view_is_fork(session)

    changed = session.set_object(obj_type, {"uid": added["uid"], "color": "red", **change})
    assert changed[field] == value
    assert changed["color"] == "red"
    assert session.view.objects[added["uid"]] == changed
    assert_view_is_fork(session)

    renamed = session.set_object(obj_type, {"name": "obj", "new-name": "obj2"})
    assert session.view.get_object("obj2", obj_type) == renamed
    assert_view_is_fork(session)

    session.delete_object(obj_type, {"name": "obj2"})
    assert added["uid"] not in session.view.objects
    assert session.view.find_object("obj2") is None
    assert session.show_changes() == {"added": [], "modified": [], "deleted": []}
    assert_view_is_fork(session)
    assert added["uid"] not in domain.state.objects


def test_set_without_a_change_writes_nothing(session: Session) -> None:
    record = session.set_object("host", {"name": "web", "ipv4-address": "10.0.0.1"})
    assert record == session.view.find_object("web")
    session.set_rule({"name": "A", "action": "Drop"})
    assert session.stored_edits == []
    assert not session.has_changes()


def test_edits_of_published_objects(domain: Domain, session: Session) -> None:
    session.set_object("host", {"name": "web", "comments": "front"})
    session.set_object("group", {"name": "servers", "members": ["web", "db"]})
    session.delete_object("service-tcp", {"name": "https"})
    assert_view_is_fork(session)
    assert domain.state.find_object("web")["comments"] == ""
    assert domain.state.find_object("https") is not None


# ---------------------------------------------------------------- rules


def test_rule_positions(session: Session) -> None:
    session.add_rule({"name": "top", "position": "top"})
    session.add_rule({"name": "bottom", "position": "bottom"})
    session.add_rule({"name": "third", "position": 3})
    session.add_rule({"name": "above-C", "position": {"above": "C"}})
    session.add_rule({"name": "below-top", "position": {"below": "top"}})
    session.add_rule({"name": "beyond", "position": 9})
    session.add_rule({"name": "by-number", "position": {"below": 1}})
    expected = ["top", "by-number", "below-top", "A", "third", "B", "above-C", "C", "bottom"]
    assert rule_names(session.view) == [*expected, "beyond"]
    numbers = [rule["rule-number"] for rule in session.view.rulebase()]
    assert numbers == list(range(1, 11))
    assert_view_is_fork(session)


def test_add_rule_returns_its_number_and_layer(session: Session) -> None:
    rule = session.add_rule({"name": "X", "position": 2, "layer": "Network"})
    assert rule["rule-number"] == 2
    assert rule["layer"] == session.view.get_layer().uid
    assert rule["type"] == "access-rule"


@pytest.mark.parametrize(
    ("rule", "position", "expected"),
    [
        ("A", "bottom", "BCA"),
        ("C", "top", "CAB"),
        ("A", 3, "BCA"),
        ("A", 2, "BAC"),
        ("C", 1, "CAB"),
        ("B", 2, "ABC"),
        ("A", {"below": "C"}, "BCA"),
        ("C", {"above": "A"}, "CAB"),
        ("A", {"above": "C"}, "BAC"),
        ("C", {"below": 1}, "ACB"),
        ("A", {"below": 3}, "BCA"),
    ],
)
def test_move_with_new_position(
    domain: Domain, session: Session, rule: str, position: Any, expected: str
) -> None:
    moved = session.set_rule({"name": rule, "new-position": position})
    assert "".join(rule_names(session.view)) == expected
    assert moved["rule-number"] == expected.index(rule) + 1
    assert_view_is_fork(session)
    assert "".join(rule_names(domain.state)) == "ABC"


def test_set_rule_fields_and_move_together(session: Session) -> None:
    web = session.view.find_object("web")["uid"]
    rule = session.set_rule(
        {"rule-number": 1, "action": "accept", "destination": ["web"], "new-position": "bottom"}
    )
    assert (rule["name"], rule["action"], rule["destination"]) == ("A", "Accept", [web])
    assert rule["rule-number"] == 3
    renamed = session.set_rule({"uid": rule["uid"], "new-name": "A2", "enabled": False})
    assert (renamed["name"], renamed["enabled"]) == ("A2", False)
    assert_view_is_fork(session)


def test_delete_rule(session: Session) -> None:
    deleted = session.delete_rule({"name": "B"})
    assert rule_names(session.view) == ["A", "C"]
    assert deleted["uid"] not in session.view.get_layer().rules
    session.delete_rule({"rule-number": 2})
    assert rule_names(session.view) == ["A"]
    assert_view_is_fork(session)


# ---------------------------------------------------------------- show-changes


def test_show_changes_added_modified_deleted(session: Session) -> None:
    base = session.base
    added = session.add_object("host", {"name": "new", "ip-address": "10.9.9.9"})
    session.set_object("host", {"name": "web", "ipv4-address": "10.0.0.10", "comments": "x"})
    session.delete_object("host", {"name": "db"})
    new_rule = session.add_rule({"name": "D", "position": "bottom", "action": "Accept"})
    session.set_rule({"name": "A", "action": "Reject"})
    session.delete_rule({"name": "B"})
    session.set_rule({"name": "C", "new-position": "top"})

    changes = session.show_changes()
    layer = session.view.get_layer()
    rule_d = {**layer.rules[new_rule["uid"]], "type": "access-rule", "layer": "Network"}
    assert changes["added"] == [added, rule_d]
    web = base.find_object("web")
    rule_a = base.get_rule(base.get_layer(), "A")
    rule_c = base.get_rule(base.get_layer(), "C")
    modified = {m["uid"]: m for m in changes["modified"]}
    assert modified[web["uid"]]["fields"] == {
        "ipv4-address": {"old": "10.0.0.1", "new": "10.0.0.10"},
        "comments": {"old": "", "new": "x"},
    }
    assert modified[web["uid"]]["type"] == "host"
    assert modified[rule_a["uid"]]["fields"] == {"action": {"old": "Drop", "new": "Reject"}}
    assert modified[rule_c["uid"]]["fields"] == {"rule-number": {"old": 3, "new": 1}}
    assert set(modified) == {web["uid"], rule_a["uid"], rule_c["uid"]}
    deleted = sorted((d["type"], d["name"]) for d in changes["deleted"])
    assert deleted == [("access-rule", "B"), ("host", "db")]
    assert session.change_count() == 7


def test_show_changes_lists_only_rules_that_moved(session: Session) -> None:
    session.add_rule({"name": "new", "position": "top"})
    session.delete_rule({"name": "B"})
    changes = session.show_changes()
    assert [a["name"] for a in changes["added"]] == ["new"]
    assert [d["name"] for d in changes["deleted"]] == ["B"]
    assert changes["modified"] == []

    session.set_rule({"name": "C", "new-position": 2, "comments": "moved"})
    modified = {m["name"]: m["fields"] for m in session.show_changes()["modified"]}
    assert modified == {
        "C": {"comments": {"old": "", "new": "moved"}, "rule-number": {"old": 3, "new": 2}}
    }


@given(
    old=st.lists(st.integers(0, 30), unique=True, max_size=25),
    new=st.lists(st.integers(0, 30), unique=True, max_size=25),
)
def test_moved_rules_are_the_fewest_whose_relative_order_changed(
    old: list[int], new: list[int]
) -> None:
    old_order, new_order = [f"r{n}" for n in old], [f"r{n}" for n in new]
    moved = moved_rules(old_order, new_order)
    kept = [u for u in new_order if u in set(old_order)]
    assert moved <= set(kept)
    rank = {u: n for n, u in enumerate(old_order)}
    staying = [rank[u] for u in kept if u not in moved]
    assert staying == sorted(staying)
    assert len(kept) - len(moved) == longest_increasing_length([rank[u] for u in kept])


def longest_increasing_length(values: list[int]) -> int:
    """By brute force over every earlier end: quadratic, plainly right."""
    best: list[int] = []
    for index, value in enumerate(values):
        best.append(1 + max((best[j] for j in range(index) if values[j] < value), default=0))
    return max(best, default=0)


def test_show_changes_forgets_a_move_undone(session: Session) -> None:
    session.set_rule({"name": "A", "new-position": "bottom"})
    session.set_rule({"name": "A", "new-position": "top"})
    assert session.show_changes() == {"added": [], "modified": [], "deleted": []}


def test_show_changes_forgets_an_object_added_then_deleted(session: Session) -> None:
    session.add_object("host", {"name": "tmp", "ip-address": "1.2.3.4"})
    session.delete_object("host", {"name": "tmp"})
    session.set_object("host", {"name": "web", "comments": "x"})
    session.set_object("host", {"name": "web", "comments": ""})
    assert session.show_changes() == {"added": [], "modified": [], "deleted": []}
    assert session.change_count() == 0


# ---------------------------------------------------------------- discard and privacy


def test_discard(domain: Domain, session: Session) -> None:
    live = read(domain.doc)
    session.add_object("host", {"name": "tmp", "ip-address": "1.2.3.4"})
    session.set_object("host", {"name": "web", "comments": "x"})
    session.set_rule({"name": "A", "new-position": "bottom"})
    assert session.discard() == 3
    assert read(domain.doc) == live
    assert session.view == domain.state
    assert session.base_heads == domain.heads()
    assert not session.has_changes()
    assert session.take_unsaved_changes() == []
    assert session.show_changes() == {"added": [], "modified": [], "deleted": []}
    # The session goes on working after a discard.
    session.add_object("host", {"name": "tmp", "ip-address": "1.2.3.4"})
    publish(session)
    assert domain.state.find_object("tmp") is not None


def test_other_sessions_never_see_a_draft(domain: Domain, session: Session) -> None:
    heads, live = domain.heads(), read(domain.doc)
    other = Session.open(domain, admin="bob", server="s2")
    session.add_object("host", {"name": "secret", "ip-address": "1.2.3.4"})
    session.set_rule({"name": "A", "action": "Accept"})
    late = Session.open(domain, admin="carol", server="s1")
    for state in (other.view, late.view, domain.state):
        assert state.find_object("secret") is None
        assert state.get_rule(state.get_layer(), "A")["action"] == "Drop"
    assert domain.heads() == heads
    assert read(domain.doc) == live
    publish(session)
    # A session sees the published work when it opens or after its own publish.
    assert Session.open(domain, admin="dave", server="s1").view.find_object("secret")
    # A draft without edits follows the live domain.
    assert other.view.find_object("secret") is not None


# ---------------------------------------------------------------- delete refused


def test_delete_refused_with_where_used(session: Session) -> None:
    web = session.view.find_object("web")
    rule = session.add_rule({"name": "uses-web", "position": 2, "destination": ["web"]})
    with pytest.raises(CrdtmdsError) as caught:
        session.delete_object("host", {"uid": web["uid"]})
    assert caught.value.code == "err_object_in_use"
    servers = session.view.find_object("servers")
    assert caught.value.details["where-used"] == [
        {"type": "group", "uid": servers["uid"], "name": "servers"},
        {
            "type": "access-rule",
            "uid": rule["uid"],
            "name": "uses-web",
            "layer": "Network",
            "rule-number": 2,
            "column": "destination",
        },
    ]
    session.delete_rule({"uid": rule["uid"]})
    session.set_object("group", {"name": "servers", "members": []})
    session.delete_object("host", {"uid": web["uid"]})
    assert session.view.find_object("web") is None


# ---------------------------------------------------------------- publish


def test_publish_appends_a_revision(domain: Domain, session: Session) -> None:
    base_bytes = domain.doc.save()
    heads_before = domain.heads()
    count = len(domain.state.revisions)
    session.add_object("host", {"name": "new", "ip-address": "10.9.9.9"})
    session.set_rule({"name": "B", "action": "Accept"})
    published = session.publish("first change", new_actor())
    session.published(published)
    revision = published.revision

    assert domain.state.revisions[-1] == revision
    assert read(domain.doc)["revisions"][-1] == revision
    assert len(domain.state.revisions) == count + 1
    assert {k: revision[k] for k in ("admin", "server", "session", "comments")} == {
        "admin": "alice",
        "server": "s1",
        "session": session.uid,
        "comments": "first change",
    }
    assert revision["changes"] == 2
    assert isinstance(revision["uid"], str) and revision["uid"]
    assert datetime.fromisoformat(revision["published-at"]).tzinfo is not None
    # One change holds the edits and the entry, written on the heads the entry names.
    assert revision["heads"] == hex_heads(heads_before)
    assert len(domain.doc.get_changes(heads_before)) == 1
    rebuilt = Document.load(base_bytes + published.change[1])
    assert sorted(rebuilt.get_heads()) == sorted(domain.heads())
    assert domain.state == full_read(domain.doc)
    # The session goes on from what it published.
    assert not session.has_changes()
    assert session.view == domain.state
    assert session.base_heads == domain.heads()
    second = publish(session, "second")
    assert [r["uid"] for r in domain.state.revisions[-2:]] == [revision["uid"], second["uid"]]


def test_a_publish_writes_the_live_document_as_the_given_actor(
    domain: Domain, session: Session
) -> None:
    own = domain.doc.get_actor()
    actor = new_actor()
    session.add_object("host", {"name": "first", "ip-address": "10.9.9.1"})
    published = session.publish("", actor)
    session.published(published)
    [change] = domain.doc.get_changes(published.heads_before)
    assert change.actor_id == actor
    # The live document keeps its own actor for other writes.
    assert domain.doc.get_actor() == own
    session.add_object("host", {"name": "second", "ip-address": "10.9.9.2"})
    # The next draft edit stays private to the session.
    assert domain.state.find_object("second") is None
    assert_view_is_fork(session)
    session.published(session.publish("", actor))  # the same actor goes on
    assert domain.state.find_object("second") is not None
    assert domain.state == full_read(domain.doc)


def test_documents_written_by_publishes_stay_whole(domain: Domain, session: Session) -> None:
    # Past heads can be read and rebuilt, and the document saves and loads to the same
    # heads.
    for round_ in range(4):
        session.add_object("host", {"name": f"h{round_}", "ip-address": f"10.8.0.{round_}"})
        publish(session)
        heads = domain.heads()
        assert sorted(rebuild_at(domain.doc, heads).get_heads()) == sorted(heads)
        assert domain.state_at(heads) == full_read(domain.doc)
        loaded = Document.load(domain.doc.save())
        assert sorted(loaded.get_heads()) == sorted(heads)
    assert domain.state == full_read(domain.doc)


def test_a_rebase_that_fails_refuses_the_publish_and_keeps_the_draft(
    domain: Domain, session: Session
) -> None:
    session.set_object("host", {"name": "web", "comments": "mine"})
    session.add_object("host", {"name": "taken", "ip-address": "10.9.9.1"})
    session.add_rule({"name": "D", "position": "bottom"})
    other = Session.open(domain, admin="bob", server="s1")
    other.set_object("host", {"name": "web", "new-name": "www"})  # a rename survives
    other.add_object("network", {"name": "taken", "subnet4": "10.5.0.0", "mask-length4": 16})
    publish(other)
    heads, edits = domain.heads(), session.stored_edits
    with pytest.raises(PublishConflict) as caught:
        session.publish("", new_actor())
    [conflict] = caught.value.details["conflicts"]
    assert (conflict["command"], conflict["name"]) == ("add-object", "taken")
    assert "already in use" in conflict["reason"]
    assert domain.heads() == heads and session.stored_edits == edits
    # The administrator starts again from what is live now.
    session.discard()
    session.set_object("host", {"name": "www", "comments": "mine"})
    session.add_object("host", {"name": "free", "ip-address": "10.9.9.1"})
    session.add_rule({"name": "D", "position": "bottom"})
    publish(session)
    web = domain.state.find_object("www")
    assert web["comments"] == "mine"
    assert rule_names(domain.state)[-1] == "D"
    assert domain.state.find_object("free") is not None
    assert domain.state == full_read(domain.doc)


def test_publish_after_another_publish_merges_both(domain: Domain, session: Session) -> None:
    other = Session.open(domain, admin="bob", server="s2")
    session.add_object("host", {"name": "mine", "ip-address": "10.9.9.1"})
    other.add_object("host", {"name": "theirs", "ip-address": "10.9.9.2"})
    publish(other)
    publish(session)
    assert domain.state == full_read(domain.doc)
    assert {"mine", "theirs"} <= set(domain.state.names)
    assert session.view == domain.state


# ---------------------------------------------------------------- abort


def test_abort_publish_leaves_the_session_able_to_publish(domain: Domain, session: Session) -> None:
    live, heads = read(domain.doc), domain.heads()
    session.add_object("host", {"name": "new", "ip-address": "10.9.9.9"})
    saved = session.take_unsaved_changes()
    view_before = session.view.copy()
    aborted = session.publish("try", new_actor())
    assert domain.state.find_object("new") is not None
    session.abort_publish(aborted)

    assert read(domain.doc) == live
    assert domain.heads() == heads
    assert domain.state == full_read(domain.doc)
    assert session.view == view_before
    assert_view_is_fork(session)
    assert session.has_changes()
    session.add_object("host", {"name": "more", "ip-address": "10.9.9.8"})
    saved += session.take_unsaved_changes()

    # The draft as persisted is still whole, without the aborted revision.
    restored = Session.restore(
        domain, uid=session.uid, admin="alice", server="s1", base_heads=session.base_heads,
        changes=saved,
    )  # fmt: skip
    assert restored.view == session.view
    assert restored.view.revisions == domain.state.revisions

    revision = publish(session, "again")
    uids = [r["uid"] for r in domain.state.revisions]
    assert revision["uid"] in uids and aborted.revision["uid"] not in uids
    assert {"new", "more"} <= set(domain.state.names)
    assert domain.state == full_read(domain.doc)


# ---------------------------------------------------------------- revert


def test_revert_to_a_revision(domain: Domain, session: Session) -> None:
    first = publish(session, "one")
    target = domain.state.copy()
    session.add_object("host", {"name": "later", "ip-address": "10.9.9.9"})
    session.set_object("host", {"name": "web", "ipv4-address": "10.0.0.99"})
    session.delete_rule({"name": "B"})
    session.set_rule({"name": "C", "new-position": "top", "action": "Accept"})
    session.add_rule({"name": "D"})
    publish(session, "two")
    assert domain.state.objects != target.objects

    assert session.revert_to(first["uid"]) == first
    assert session.view.objects == target.objects
    assert rule_names(session.view) == ["A", "B", "C"]
    assert session.view.rulebase() == target.rulebase()
    changes = session.show_changes()
    assert [d["name"] for d in changes["deleted"]] == ["later", "D"]
    modified = {m["name"]: m["fields"] for m in changes["modified"]}
    assert modified["web"] == {"ipv4-address": {"old": "10.0.0.99", "new": "10.0.0.1"}}
    assert modified["C"]["action"] == {"old": "Accept", "new": "Drop"}
    assert [a["name"] for a in changes["added"]] == ["B"]

    session.revert_to(first["uid"])
    assert session.view.objects == target.objects

    revision = publish(session, "revert")
    assert revision["heads"] == hex_heads(domain.doc.get_changes([])[-1].deps)
    assert domain.state.revisions[-1] == revision
    assert len(domain.state.revisions) == len(target.revisions) + 2
    assert domain.state.objects == target.objects
    assert domain.state.rulebase() == target.rulebase()
    assert domain.state == full_read(domain.doc)


def test_revert_keeps_concurrent_work_on_rules(domain: Domain) -> None:
    target = domain.state.revisions[-1]
    mover = Session.open(domain, admin="alice", server="s1")
    mover.set_rule({"name": "A", "new-position": "bottom", "action": "Accept"})
    publish(mover)
    reverter = Session.open(domain, admin="alice", server="s1")
    adder = Session.open(domain, admin="bob", server="s2")
    reverter.revert_to(target["uid"])
    adder.add_rule({"name": "N", "position": 2})
    adder.set_rule({"name": "A", "comments": "kept"})
    publish(reverter)
    publish(adder)

    state = domain.state
    assert state == full_read(domain.doc)
    layer = state.get_layer()
    # The concurrent rule stays in the order list (not only in the rule map)...
    assert sorted(model.effective_order(layer.order, layer.rules)) == sorted(layer.rules)
    assert {layer.rules[u]["name"] for u in layer.order if u in layer.rules} == {"A", "B", "C", "N"}
    # N was added below B; the revert before it put A, B, C back in order.
    assert rule_names(state) == ["A", "B", "N", "C"]
    # ...and the reverted rule keeps the other session's edit of another field.
    rule_a = state.get_rule(layer, "A")
    assert (rule_a["action"], rule_a["comments"]) == ("Drop", "kept")
    # Positions given against that rulebase land exactly.
    after = Session.open(domain, admin="carol", server="s1")
    after.add_rule({"name": "X", "position": {"below": "N"}})
    after.add_rule({"name": "Y", "position": {"above": "N"}})
    assert rule_names(after.view) == ["A", "B", "Y", "N", "X", "C"]


def test_revert_to_an_unknown_revision(session: Session) -> None:
    with pytest.raises(CrdtmdsError) as caught:
        session.revert_to("no-such-revision")
    assert caught.value.code == "generic_err_object_not_found"
    assert not session.has_changes()


# ---------------------------------------------------------------- restore


def edit_a_lot(session: Session) -> None:
    session.add_object("host", {"name": "new", "ip-address": "10.9.9.9"})
    session.add_object("group", {"name": "g", "members": ["new", "db"]})
    session.set_object("host", {"name": "web", "comments": "front", "new-name": "www"})
    session.delete_object("service-tcp", {"name": "https"})
    session.add_rule({"name": "D", "position": 2, "source": ["g"]})
    session.set_rule({"name": "A", "new-position": "bottom", "track": "Log"})
    session.delete_rule({"name": "B"})


def test_restore_gives_the_same_draft(domain: Domain, session: Session) -> None:
    edit_a_lot(session)
    saved = session.take_unsaved_changes()
    assert saved == session.stored_edits
    restored = Session.restore(
        domain, uid=session.uid, admin="alice", server="s1", base_heads=session.base_heads,
        changes=saved, name="work", created_at=session.created_at,
    )  # fmt: skip
    assert restored.view == session.view
    assert restored.base == session.base
    assert restored.stored_edits == session.stored_edits
    assert restored.show_changes() == session.show_changes()
    assert restored.change_count() == session.change_count()
    assert (restored.uid, restored.name, restored.created_at) == (
        session.uid, "work", session.created_at,
    )  # fmt: skip

    # The restored session writes further changes that a second restart loads too.
    restored.add_object("host", {"name": "after", "ip-address": "10.9.9.7"})
    again = Session.restore(
        domain, uid=session.uid, admin="alice", server="s1", base_heads=restored.base_heads,
        changes=saved + restored.take_unsaved_changes(),
    )  # fmt: skip
    assert again.view == restored.view
    publish(again)
    assert domain.state == full_read(domain.doc)
    assert domain.state.find_object("after") is not None


def test_restore_after_others_published(domain: Domain, session: Session) -> None:
    edit_a_lot(session)
    saved = session.take_unsaved_changes()
    other = Session.open(domain, admin="bob", server="s2")
    other.add_object("host", {"name": "theirs", "ip-address": "10.8.8.8"})
    publish(other)
    restored = Session.restore(
        domain, uid=session.uid, admin="alice", server="s1", base_heads=session.base_heads,
        changes=saved,
    )  # fmt: skip
    assert restored.view == session.view
    assert restored.view.find_object("theirs") is None
    publish(restored)
    assert domain.state.find_object("theirs") is not None
    assert domain.state.find_object("www") is not None
    assert domain.state == full_read(domain.doc)


def test_restore_of_an_empty_draft(domain: Domain) -> None:
    restored = Session.restore(
        domain, uid="s", admin="a", server="s1", base_heads=domain.heads(),
        changes=[],
    )  # fmt: skip
    assert restored.view == domain.state
    assert not restored.has_changes()
    assert restored.show_changes() == {"added": [], "modified": [], "deleted": []}


# ---------------------------------------------------------------- concurrency


def test_concurrent_move_and_edit_of_one_rule_both_survive(domain: Domain) -> None:
    mover = Session.open(domain, admin="alice", server="s1")
    editor = Session.open(domain, admin="bob", server="s2")
    mover.set_rule({"name": "A", "new-position": "bottom"})
    editor.set_rule({"name": "A", "action": "Reject", "comments": "edited"})
    publish(mover)
    publish(editor)
    assert rule_names(domain.state) == ["B", "C", "A"]
    rule = domain.state.get_rule(domain.state.get_layer(), "A")
    assert (rule["action"], rule["comments"]) == ("Reject", "edited")
    assert domain.state == full_read(domain.doc)


def test_concurrent_moves_of_one_rule_keep_it_once(domain: Domain) -> None:
    first = Session.open(domain, admin="alice", server="s1")
    second = Session.open(domain, admin="bob", server="s2")
    first.set_rule({"name": "A", "new-position": "bottom"})
    second.set_rule({"name": "A", "new-position": 2})
    publish(first)
    publish(second)
    names = rule_names(domain.state)
    assert sorted(names) == ["A", "B", "C"]
    assert domain.state == full_read(domain.doc)


def test_concurrent_edits_of_different_fields_both_survive(domain: Domain) -> None:
    first = Session.open(domain, admin="alice", server="s1")
    second = Session.open(domain, admin="bob", server="s2")
    first.set_object("host", {"name": "web", "comments": "from alice"})
    second.set_object("host", {"name": "web", "color": "red"})
    publish(first)
    publish(second)
    web = domain.state.find_object("web")
    assert (web["comments"], web["color"]) == ("from alice", "red")


def test_concurrent_delete_and_new_reference_is_reported(domain: Domain) -> None:
    # On one server the later publish would be refused (its rebase fails): concurrent
    # publishes on two servers merge per field, and verify reports what they leave.
    elsewhere = second_server(domain)
    deleter = Session.open(domain, admin="alice", server="s1")
    user = Session.open(elsewhere, admin="bob", server="s2")
    db = domain.state.find_object("db")
    deleter.delete_object("host", {"name": "db"})
    rule = user.add_rule({"name": "to-db", "destination": ["db"]})
    group = user.add_object("group", {"name": "dbs", "members": ["db"]})
    assert domain.state.verify() == []
    publish(deleter)
    publish(user)
    sync(domain, elsewhere)
    assert sorted(domain.heads()) == sorted(elsewhere.heads())
    problems = domain.state.verify()
    assert {
        "type": "dangling-reference",
        "holder": {"type": "access-rule", "uid": rule["uid"], "layer": "Network"},
        "field": "destination",
        "missing": db["uid"],
    } in problems
    assert {
        "type": "dangling-reference",
        "holder": {"type": "group", "uid": group["uid"], "name": "dbs"},
        "field": "members",
        "missing": db["uid"],
    } in problems
    assert len(problems) == 2
    assert domain.state == full_read(domain.doc)


def test_concurrent_creation_of_one_name_is_reported(domain: Domain) -> None:
    elsewhere = second_server(domain)
    first = Session.open(domain, admin="alice", server="s1")
    second = Session.open(elsewhere, admin="bob", server="s2")
    a = first.add_object("host", {"name": "dup", "ip-address": "10.7.7.1"})
    b = second.add_object("service-tcp", {"name": "dup", "port": 7})
    publish(first)
    publish(second)
    sync(domain, elsewhere)
    uids = sorted([a["uid"], b["uid"]])
    assert domain.state.verify() == [{"type": "duplicate-name", "name": "dup", "uids": uids}]
    assert domain.state.find_object("dup")["uid"] == uids[0]
    # A session that sees the duplicate cannot add a third, and can rename one away.
    fixer = Session.open(domain, admin="carol", server="s1")
    with pytest.raises(CrdtmdsError) as caught:
        fixer.add_object("host", {"name": "dup", "ip-address": "10.7.7.2"})
    assert caught.value.code == "err_name_in_use"
    fixer.set_object(a["type"], {"uid": a["uid"], "new-name": "dup-host"})
    publish(fixer)
    assert domain.state.verify() == []


def test_concurrent_group_cycle_is_reported(domain: Domain) -> None:
    setup = Session.open(domain, admin="setup", server="s1")
    a = setup.add_object("group", {"name": "a"})
    b = setup.add_object("group", {"name": "b"})
    c = setup.add_object("group", {"name": "c", "members": ["a"]})
    publish(setup)
    elsewhere = second_server(domain)
    first = Session.open(domain, admin="alice", server="s1")
    second = Session.open(elsewhere, admin="bob", server="s2")
    first.set_object("group", {"name": "a", "members": ["b"]})
    second.set_object("group", {"name": "b", "members": ["a"]})
    publish(first)
    publish(second)
    sync(domain, elsewhere)
    assert domain.state.verify() == [{"type": "group-cycle", "uids": sorted([a["uid"], b["uid"]])}]
    assert c["uid"] not in domain.state.verify()[0]["uids"]
    # With the cycle in place, edits still validate, and none can add to it.
    fixer = Session.open(domain, admin="carol", server="s1")
    with pytest.raises(CrdtmdsError) as caught:
        fixer.set_object("group", {"name": "c", "members": ["a", "c"]})
    assert caught.value.code == "err_validation_failed"
    fixer.set_object("group", {"name": "b", "members": []})
    publish(fixer)
    assert domain.state.verify() == []


def test_any_is_never_dangling(domain: Domain, session: Session) -> None:
    session.add_rule({"name": "any", "source": ["Any"]})
    publish(session)
    assert domain.state.verify() == []
    assert model.ANY_UID not in domain.state.objects


def test_a_draft_stored_as_changes_by_an_earlier_version_is_restored(domain: Domain) -> None:
    # Before publishes became one change, a draft was stored as the changes of its fork.
    base_heads = domain.heads()
    fork = fork_with_actor(domain.doc, new_actor())
    objects = child_id(fork, ROOT, "objects")
    record = model.build_object("host", {"name": "old", "ip-address": "10.6.6.6"},
                                domain.state.find_object)  # fmt: skip
    web = domain.state.find_object("web")
    with fork.transaction() as tx:
        put_value(tx, objects, record["uid"], record)
    with fork.transaction() as tx:
        put_value(tx, child_id(fork, objects, web["uid"]), "comments", "drafted")
    chunks = [change.bytes for change in fork.get_changes(base_heads)]
    later = Session.open(domain, admin="bob", server="s1")
    later.add_object("host", {"name": "later", "ip-address": "10.6.6.7"})
    publish(later)

    restored = Session.restore(
        domain, uid="old-draft", admin="alice", server="s1", base_heads=base_heads,
        changes=chunks,
    )  # fmt: skip
    assert restored.has_changes()
    changes = restored.show_changes()
    assert [entry["name"] for entry in changes["added"]] == ["old"]
    assert [entry["name"] for entry in changes["modified"]] == ["web"]
    restored.add_object("host", {"name": "new", "ip-address": "10.6.6.8"})
    publish(restored)
    state = domain.state
    assert {"old", "new", "later"} <= set(state.names)
    assert state.find_object("web")["comments"] == "drafted"
    assert state == full_read(domain.doc)
