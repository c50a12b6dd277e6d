"""The live domain document and its incrementally kept plain-data view.

The view must always equal a full re-read of the document: after local publishes, after
changes merged from a peer, and after concurrent moves; and publishing the same drafts in
any order must give identical documents everywhere.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from automerge.core import ROOT, Document, ScalarType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmds.core import model
from crdtmds.core.changes import DEL, HEAD, MAKE_LIST, MAKE_MAP, SET, Op
from crdtmds.core.docdata import child_id, hex_heads, put_value, read, replace_list, unhex_heads
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.revert import content_heads
from crdtmds.core.session import Session
from crdtmds.core.view_refresh import FOREIGN, FULL, Entity, child_entity, refresh_state, touch_of
from crdtmds.errors import CrdtmdsError, ProtocolError


def full_read(doc: Document) -> DomainState:
    return DomainState.from_plain(read(doc))


def publish(session: Session, comments: str = "") -> dict[str, Any]:
    return session.publish_in_memory(comments)


def rule_names(state: DomainState) -> list[str]:
    return [rule["name"] for rule in state.rulebase()]


def build_base() -> Domain:
    domain = Domain.create("acme", "doc-domain")
    setup = Session.open(domain, admin="setup", server="s1")
    setup.add_object("host", {"name": "web", "ipv4-address": "10.0.0.1"})
    setup.add_object("host", {"name": "db", "ipv4-address": "10.0.0.2"})
    setup.add_object("network", {"name": "lan", "subnet4": "10.0.0.0", "mask-length4": 24})
    setup.add_object("service-tcp", {"name": "https", "port": 443})
    setup.add_object("group", {"name": "servers", "members": ["web", "db"]})
    for name in "ABCD":
        setup.add_rule({"name": name, "position": "bottom", "destination": ["servers"]})
    publish(setup, "base")
    return domain


BASE_BYTES = build_base().doc.save()


def load_base(document_id: str = "doc-domain") -> Domain:
    return Domain(document_id, Document.load(BASE_BYTES))


def peer_of(domain: Domain) -> Domain:
    """Another server's copy of the same document."""
    return Domain(domain.document_id, Document.load(domain.doc.save()))


@contextmanager
def no_full_reads() -> Iterator[None]:
    """Fail if the view is rebuilt from a full read instead of being refreshed."""

    def refuse(cls: type, root: Any) -> DomainState:
        raise AssertionError("full re-read of the domain")

    with mock.patch.object(DomainState, "from_plain", classmethod(refuse)):
        yield


# ---------------------------------------------------------------- plain data in and out


def test_plain_data_round_trip_keeps_scalar_types() -> None:
    doc = Document()
    value = {"t": True, "f": False, "i": -3, "x": 1.5, "n": None, "b": b"\x00\x01", "s": "é",
             "l": [1, [2, {"k": "v"}], (3,)], "m": {}}  # fmt: skip
    with doc.transaction() as tx:
        put_value(tx, ROOT, "v", value)
    assert read(doc) == {"v": {**value, "l": [1, [2, {"k": "v"}], [3]]}}
    record = child_id(doc, ROOT, "v")
    assert record is not None
    assert doc.get(record, "t")[0] == (ScalarType.Boolean, True)
    assert doc.get(record, "i")[0] == (ScalarType.Int, -3)
    assert child_id(doc, record, "t") is None
    assert child_id(doc, record, "missing") is None
    assert child_id(doc, record, "l") is not None


def test_replace_list_and_unstorable_values() -> None:
    doc = Document()
    with doc.transaction() as tx:
        put_value(tx, ROOT, "l", ["a", "b"])
        replace_list(tx, ROOT, "l", ("c",))
    assert read(doc) == {"l": ["c"]}
    heads = doc.get_heads()
    with pytest.raises(CrdtmdsError) as caught, doc.transaction() as tx:
        put_value(tx, ROOT, "bad", {1, 2})
    assert caught.value.code == "err_validation_failed"
    assert doc.get_heads() == heads


def test_heads_as_hex() -> None:
    heads = [bytes([2]) * 32, bytes([1]) * 32]
    assert hex_heads(heads) == ["01" * 32, "02" * 32]
    assert sorted(unhex_heads(hex_heads(heads))) == sorted(heads)
    for bad in (["zz"], [5]):
        with pytest.raises(CrdtmdsError) as caught:
            unhex_heads(bad)
        assert caught.value.code == "err_validation_failed"


# ---------------------------------------------------------------- creation and shape


def test_create() -> None:
    domain = Domain.create("  acme  ", "doc-x")
    assert domain.name == "acme"
    assert domain.document_id == "doc-x"
    assert domain.is_domain_document()
    assert [layer.name for layer in domain.state.layers.values()] == ["Network"]
    assert domain.state.rulebase() == []
    assert domain.state.revisions == []
    assert domain.state == full_read(domain.doc)
    assert len(domain.heads()) == 1


@pytest.mark.parametrize("name", ["", "Any", 5])
def test_create_refuses_bad_names(name: Any) -> None:
    with pytest.raises(CrdtmdsError):
        Domain.create(name, "doc-x")


def test_an_empty_copy_waits_for_its_first_sync() -> None:
    source = load_base()
    empty = Domain(source.document_id, Document())
    assert not empty.is_domain_document()
    assert empty.state.objects == {}
    empty.doc.merge(source.doc)
    assert empty.is_domain_document()
    assert empty.state == full_read(source.doc)


# ---------------------------------------------------------------- incremental view


def test_view_follows_local_publishes() -> None:
    domain = load_base()
    session = Session.open(domain, admin="alice", server="s1")
    session.add_object("host", {"name": "new", "ip-address": "10.0.0.9"})
    session.set_object("group", {"name": "servers", "members": ["new"]})
    session.add_rule({"name": "E", "position": 2, "source": ["new"]})
    session.set_rule({"name": "A", "new-position": "bottom", "action": "Accept"})
    session.delete_rule({"name": "C"})
    publish(session)
    assert domain.state == full_read(domain.doc)
    assert rule_names(domain.state) == ["E", "B", "D", "A"]

    session.delete_object("host", {"name": "web"})
    revision = publish(session)
    assert domain.state == full_read(domain.doc)
    session.revert_to(domain.state.revisions[0]["uid"])
    publish(session)
    assert domain.state == full_read(domain.doc)
    assert rule_names(domain.state) == ["A", "B", "C", "D"]
    assert domain.state.revisions[-2] == revision


def test_view_follows_changes_merged_from_a_peer() -> None:
    domain = load_base()
    before = domain.state
    peer = peer_of(domain)
    editor = Session.open(peer, admin="bob", server="s2")
    editor.add_object("address-range", {"name": "pool", "ip-address-first": "10.0.0.10",
                                        "ip-address-last": "10.0.0.20"})  # fmt: skip
    editor.set_object("host", {"name": "web", "new-name": "www", "tags": ["dmz"]})
    editor.delete_object("service-tcp", {"name": "https"})
    editor.add_rule({"name": "E", "position": {"above": "B"}, "source": ["pool"]})
    editor.set_rule({"name": "D", "new-position": "top", "enabled": False})
    editor.delete_rule({"name": "C"})
    publish(editor, "from s2")

    with no_full_reads():
        domain.doc.merge(peer.doc)
        state = domain.state
    assert state == full_read(domain.doc)
    assert state == peer.state
    assert rule_names(state) == ["D", "A", "E", "B"]
    assert state.find_object("www")["tags"] == ["dmz"]
    assert state.find_object("web") is None
    assert state.revisions[-1]["comments"] == "from s2"
    # The earlier view is a value: refreshing did not change it.
    assert before == full_read(Document.load(BASE_BYTES))


def test_view_follows_raw_peer_edits_outside_sessions() -> None:
    domain = load_base()
    _ = domain.state  # a view now, to be refreshed after the merge
    peer = peer_of(domain)
    layers = child_id(peer.doc, ROOT, "layers")
    with peer.doc.transaction() as tx:
        tx.put(ROOT, "name", ScalarType.Str, "acme-renamed")
        put_value(tx, layers, "second", {"uid": "second", "name": "Second", "rules": {},
                                         "order": []})  # fmt: skip
    assert domain.state.name == "acme"
    domain.doc.merge(peer.doc)
    assert domain.state == full_read(domain.doc)
    assert domain.name == "acme-renamed"
    assert domain.state.get_layer("Second").uid == "second"

    layer_id = child_id(peer.doc, layers, "second")
    with peer.doc.transaction() as tx:
        tx.put(layer_id, "name", ScalarType.Str, "Renamed")
    with peer.doc.transaction() as tx:
        tx.delete(layers, domain.state.get_layer().uid)
    domain.doc.merge(peer.doc)
    assert domain.state == full_read(domain.doc)
    assert [layer.name for layer in domain.state.layers.values()] == ["Renamed"]


def test_view_survives_foreign_shapes() -> None:
    """Data crdtmds never writes (a scalar where a record belongs) is read, not fatal."""
    domain = load_base()
    _ = domain.state  # a view now, to be refreshed after the merge
    peer = peer_of(domain)
    objects = child_id(peer.doc, ROOT, "objects")
    revisions = child_id(peer.doc, ROOT, "revisions")
    with peer.doc.transaction() as tx:
        tx.put(objects, "junk", ScalarType.Str, "not a record")
        tx.insert(revisions, 0, ScalarType.Int, 7)
    domain.doc.merge(peer.doc)
    assert domain.state == full_read(domain.doc)
    assert "junk" not in domain.state.objects
    assert domain.state.revisions[0] == {}


def test_view_survives_foreign_containers() -> None:
    domain = load_base()
    _ = domain.state  # a view now, to be refreshed after the merge
    layer_uid = domain.state.get_layer().uid
    peer = peer_of(domain)
    layer_id = child_id(peer.doc, child_id(peer.doc, ROOT, "layers"), layer_uid)
    with peer.doc.transaction() as tx:
        put_value(tx, layer_id, "rules", ["not", "a", "map"])
        put_value(tx, layer_id, "order", {"not": "a list"})
        put_value(tx, layer_id, "name", {"not": "text"})
    domain.doc.merge(peer.doc)
    layer = domain.state.layers[layer_uid]
    assert (layer.name, layer.rules, layer.order) == ("", {}, [])
    assert domain.state == full_read(domain.doc)

    with peer.doc.transaction() as tx:
        put_value(tx, ROOT, "name", ["not", "text"])
        put_value(tx, ROOT, "objects", ["junk"])
        put_value(tx, ROOT, "layers", "junk")
        put_value(tx, ROOT, "revisions", {"a": 1})
    domain.doc.merge(peer.doc)
    assert domain.state == DomainState(name="")
    assert domain.state == full_read(domain.doc)


def test_concurrent_moves_leave_repeats_that_reads_drop() -> None:
    domain = load_base()
    peer = peer_of(domain)
    here = Session.open(domain, admin="alice", server="s1")
    there = Session.open(peer, admin="bob", server="s2")
    here.set_rule({"name": "A", "new-position": "bottom"})
    there.set_rule({"name": "A", "new-position": 3})
    there.set_rule({"name": "D", "new-position": "top"})
    publish(here)
    publish(there)
    with no_full_reads():
        domain.doc.merge(peer.doc)
        state = domain.state
    peer.doc.merge(domain.doc)
    assert sorted(domain.heads()) == sorted(peer.heads())
    assert state == full_read(domain.doc) == peer.state

    layer = state.get_layer()
    raw = read(domain.doc)["layers"][layer.uid]["order"]
    assert layer.order == raw
    rule_a = state.get_rule(layer, "A")["uid"]
    assert Counter(raw)[rule_a] == 2
    names = rule_names(state)
    assert sorted(names) == ["A", "B", "C", "D"]
    assert [r["uid"] for r in state.rulebase()] == model.effective_order(raw, layer.rules)
    assert [r["rule-number"] for r in state.rulebase()] == [1, 2, 3, 4]

    # Sessions opened on the merged document work against the visible order.
    fixer = Session.open(domain, admin="carol", server="s1")
    fixer.set_rule({"name": "A", "new-position": 1})
    fixer.add_rule({"name": "E", "position": 2})
    assert rule_names(fixer.view)[:2] == ["A", "E"]
    publish(fixer)
    assert domain.state == full_read(domain.doc)
    # A move takes out every copy of the rule it moves.
    assert domain.state.get_layer().order.count(rule_a) == 1


def test_state_at_a_past_revision() -> None:
    domain = load_base()
    first = domain.state.revisions[0]
    at_first = domain.state.copy()
    session = Session.open(domain, admin="alice", server="s1")
    session.add_object("host", {"name": "later", "ip-address": "10.0.0.9"})
    session.delete_rule({"name": "A"})
    second = publish(session)
    # An entry names the heads its publish was written on; the content is its change's.
    past = domain.state_at(content_heads(domain.doc, unhex_heads(first["heads"]), first["uid"]))
    assert past.objects == at_first.objects
    assert past.rulebase() == at_first.rulebase()
    assert past.revisions == [first]  # the entry is in the change with the content
    between = domain.state_at(
        content_heads(domain.doc, unhex_heads(second["heads"]), second["uid"])
    )
    assert between.find_object("later") is not None
    assert between.revisions == [first, second]
    before = domain.state_at(unhex_heads(second["heads"]))
    assert before.find_object("later") is None and before.revisions == [first]
    assert domain.state.find_object("later") is not None


def test_state_at_unknown_heads() -> None:
    domain = load_base()
    with pytest.raises(CrdtmdsError) as caught:
        domain.state_at([bytes(32)])
    assert caught.value.code == "err_validation_failed"


# ---------------------------------------------------------------- refreshing

RULE = ("rule", "L", "R")


@pytest.mark.parametrize(
    ("parent", "key", "child"),
    [
        (("root",), "objects", ("objects",)),
        (("root",), "layers", ("layers",)),
        (("root",), "revisions", ("revisions",)),
        (("root",), "name", ("name",)),
        (("root",), "elsewhere", FOREIGN),
        (("objects",), "u1", ("object", "u1")),
        (("object", "u1"), "members", ("object", "u1")),
        (("layers",), "L", ("layer", "L")),
        (("layer", "L"), "rules", ("rules", "L")),
        (("layer", "L"), "order", ("order", "L")),
        (("layer", "L"), "name", ("layer-part", "L")),
        (("rules", "L"), "R", RULE),
        (RULE, "source", RULE),
        (("revisions",), (3, b"a"), ("revision", (9, b"a"))),
        (FOREIGN, "x", FOREIGN),
    ],
)
def test_child_entity(parent: Entity, key: Any, child: Entity) -> None:
    assert child_entity(parent, key, (9, b"a")) == child


def op_at(key: Any, *, insert: bool = False, action: int = SET) -> Op:
    return Op((7, b"b"), (1, b"a"), key, insert, action)


@pytest.mark.parametrize(
    ("entity", "op", "touch"),
    [
        (("root",), op_at("name"), ("name",)),
        (("root",), op_at("objects"), FULL),
        (("root",), op_at("revisions", action=MAKE_LIST), FULL),
        (("root",), op_at("elsewhere"), None),
        (("name",), op_at(HEAD, insert=True), ("name",)),
        (("objects",), op_at("u1", action=DEL), ("object", "u1")),
        (("objects",), op_at(HEAD, insert=True), FULL),
        (("object", "u1"), op_at("comments"), ("object", "u1")),
        (("layers",), op_at("L", action=MAKE_MAP), ("layer", "L")),
        (("layer", "L"), op_at("name"), ("layer-name", "L")),
        (("layer", "L"), op_at("rules", action=MAKE_MAP), ("layer", "L")),
        (("layer-part", "L"), op_at("x"), ("layer", "L")),
        (("rules", "L"), op_at("R", action=DEL), RULE),
        (RULE, op_at((3, b"a"), insert=True), RULE),
        (("order", "L"), op_at((3, b"a"), action=DEL), ("order", "L")),
        (("revisions",), op_at((3, b"a"), insert=True, action=MAKE_MAP), ("revision", (7, b"b"))),
        (("revisions",), op_at((3, b"a")), ("revision", (3, b"a"))),
        (("revisions",), op_at((3, b"a"), action=DEL), ("revisions", 0)),
        (("revision", (3, b"a")), op_at("admin"), ("revision", (3, b"a"))),
        (FOREIGN, op_at("x"), None),
    ],
)
def test_touch_of(entity: Entity, op: Op, touch: Any) -> None:
    assert touch_of(entity, op) == touch


def test_view_follows_edits_inside_existing_nested_lists() -> None:
    """Lists crdtmds replaces whole, a peer may edit in place: the objects are found."""
    domain = load_base()
    _ = domain.state  # a view now, to be refreshed after the merge
    peer = peer_of(domain)
    state = peer.state
    group = child_id(
        peer.doc, child_id(peer.doc, ROOT, "objects"), state.find_object("servers")["uid"]
    )
    members = child_id(peer.doc, group, "members")
    layer = child_id(peer.doc, child_id(peer.doc, ROOT, "layers"), state.get_layer().uid)
    rule = child_id(
        peer.doc, child_id(peer.doc, layer, "rules"), state.get_rule(state.get_layer(), "B")["uid"]
    )
    destination = child_id(peer.doc, rule, "destination")
    heads = child_id(
        peer.doc, child_id(peer.doc, child_id(peer.doc, ROOT, "revisions"), 0), "heads"
    )
    with peer.doc.transaction() as tx:
        tx.insert(members, 0, ScalarType.Str, state.find_object("lan")["uid"])
        tx.delete(destination, 0)
        tx.insert(heads, 0, ScalarType.Str, "extra")
    with no_full_reads():
        domain.doc.merge(peer.doc)
        refreshed = domain.state
    assert refreshed == full_read(domain.doc)
    assert refreshed.get_rule(refreshed.get_layer(), "B")["destination"] == []
    assert refreshed.revisions[0]["heads"][0] == "extra"


def test_revisions_are_reread_from_the_first_changed_one() -> None:
    domain = load_base()
    peer = peer_of(domain)
    for server, copy in (("s1", domain), ("s2", peer)):
        session = Session.open(copy, admin="a", server=server)
        session.add_object("host", {"name": f"on-{server}", "ip-address": "10.9.9.9"})
        publish(session, f"from {server}")
    with no_full_reads():
        domain.doc.merge(peer.doc)
        merged = domain.state
    assert merged == full_read(domain.doc)
    assert sorted(r["comments"] for r in merged.revisions[1:]) == ["from s1", "from s2"]

    # A deleted revision (no crdtmds server deletes one) re-reads the whole list.
    with peer.doc.transaction() as tx:
        tx.delete(child_id(peer.doc, ROOT, "revisions"), 0)
    domain.doc.merge(peer.doc)
    with no_full_reads():
        refreshed = domain.state
    assert refreshed == full_read(domain.doc)
    assert len(refreshed.revisions) == 2


def test_a_change_that_does_not_decode_means_a_full_read() -> None:
    domain = load_base()
    _ = domain.state
    peer = peer_of(domain)
    editor = Session.open(peer, admin="bob", server="s2")
    editor.add_object("host", {"name": "new", "ip-address": "10.0.0.9"})
    publish(editor)
    domain.doc.merge(peer.doc)
    with mock.patch("crdtmds.core.view_refresh.decode_change", side_effect=ProtocolError("bad")):
        refreshed = domain.state
    assert refreshed == full_read(domain.doc)
    assert refreshed.find_object("new") is not None


def test_the_index_follows_adopted_publishes() -> None:
    """Objects a local publish made are known when a peer later writes into them."""
    domain = load_base()
    peer = peer_of(domain)
    _ = domain.state
    local = Session.open(domain, admin="alice", server="s1")
    local.add_rule({"name": "E", "position": "top"})
    local.add_object("host", {"name": "mine", "ip-address": "10.0.0.7"})
    publish(local)
    peer.doc.merge(domain.doc)
    editor = Session.open(peer, admin="bob", server="s2")
    editor.set_rule({"name": "E", "comments": "seen"})
    editor.set_object("host", {"name": "mine", "comments": "seen"})
    publish(editor)
    index = domain._refresher.index
    scan = index.scan
    with no_full_reads(), mock.patch.object(index, "scan", wraps=scan) as scans:
        domain.doc.merge(peer.doc)
        refreshed = domain.state
    # Only the containers were looked up, not the thousands of records they may hold.
    assert [c.args[1] for c in scans.call_args_list] == ["skeleton"]
    assert refreshed == full_read(domain.doc)
    assert refreshed.get_rule(refreshed.get_layer(), "E")["comments"] == "seen"
    assert refreshed.find_object("mine")["comments"] == "seen"


def test_sessions_restored_on_a_moved_document() -> None:
    domain = load_base()
    draft = Session.open(domain, admin="alice", server="s1", uid="draft")
    draft.set_rule({"name": "A", "comments": "draft"})
    draft.delete_object("service-tcp", {"name": "https"})
    other = Session.open(domain, admin="bob", server="s1")
    other.add_rule({"name": "E", "position": "top"})
    publish(other)
    restored = Session.restore(
        domain, uid="draft", admin="alice", server="s1", base_heads=draft.base_heads,
        changes=draft.take_unsaved_changes(),
    )  # fmt: skip
    assert restored.view == draft.view
    assert restored.view.find_object("https") is None


def test_refresh_state_falls_back_to_a_full_read() -> None:
    domain = load_base()
    stale = domain.state
    since = domain.heads()
    with domain.doc.transaction() as tx:
        put_value(tx, ROOT, "objects", {})
    fresh = refresh_state(domain.doc, stale, since)
    assert fresh == full_read(domain.doc)
    assert fresh.objects == {}
    assert stale.objects != {}


# ---------------------------------------------------------------- publish order


class _FixedClock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:
        return datetime(2025, 1, 1, tzinfo=UTC)


@contextmanager
def deterministic_revision(session_uid: str) -> Iterator[None]:
    """The revision entry a session writes depends only on the session, not the moment."""
    with (
        mock.patch("crdtmds.core.session.datetime", _FixedClock),
        mock.patch.object(model, "new_uid", lambda: f"revision-of-{session_uid}"),
    ):
        yield


POOL = ["h0", "h1", "h2", "grp", "svc", "web", "db", "lan"]
EDITS = st.tuples(
    st.sampled_from(
        ["add-host", "add-group", "add-service", "set-object", "delete-object", "add-rule",
         "set-rule", "move-rule", "delete-rule"]
    ),
    st.integers(0, 50),
    st.integers(0, 50),
)  # fmt: skip
POSITIONS = ["top", "bottom", 1, 2, 3, 9, "above", "below"]


def pick(items: list[Any], k: int) -> Any:
    return items[k % len(items)] if items else None


def position_for(view: DomainState, k: int) -> Any:
    position = pick(POSITIONS, k)
    if position in ("above", "below"):
        rules = view.rulebase()
        if not rules:
            return "top"
        return {position: pick(rules, k // 7)["uid"]}
    return position


def apply_edit(session: Session, op: str, a: int, b: int) -> None:
    view = session.view
    objects = sorted(view.objects.values(), key=lambda r: r["uid"])
    networks = [o for o in objects if o["type"] in model.NETWORK_TYPES]
    rules = view.rulebase()
    name = pick(POOL, a)
    if op == "add-host":
        session.add_object("host", {"name": name, "ip-address": f"10.1.{a}.{b}"})
    elif op == "add-group":
        members = [o["uid"] for i, o in enumerate(networks) if (b >> i) & 1]
        session.add_object("group", {"name": name, "members": members})
    elif op == "add-service":
        session.add_object("service-udp", {"name": name, "port": 1000 + b})
    elif op == "set-object" and objects:
        target = pick(objects, b)
        params: dict[str, Any] = {"uid": target["uid"], "comments": f"c{a}"}
        if a % 3 == 0:
            params["new-name"] = name
        if a % 3 == 1:
            params["color"] = "red"
        session.set_object(target["type"], params)
    elif op == "delete-object" and objects:
        target = pick(objects, b)
        session.delete_object(target["type"], {"uid": target["uid"]})
    elif op == "add-rule":
        source = [pick(networks, b)["uid"]] if networks and b % 2 else ["Any"]
        session.add_rule({"name": f"r{a}", "position": position_for(view, a), "source": source})
    elif op == "set-rule" and rules:
        params = {"uid": pick(rules, a)["uid"], "action": pick(list(model.ACTIONS), b)}
        if b % 2:
            params["comments"] = f"c{b}"
        session.set_rule(params)
    elif op == "move-rule" and rules:
        session.set_rule({"uid": pick(rules, a)["uid"], "new-position": position_for(view, b)})
    elif op == "delete-rule" and rules:
        session.delete_rule({"uid": pick(rules, a)["uid"]})


def run_edits(session: Session, edits: list[tuple[str, int, int]]) -> None:
    for op, a, b in edits:
        written = session.stored_edits
        try:
            apply_edit(session, op, a, b)
        except CrdtmdsError:
            assert session.stored_edits == written  # a refused edit takes nothing


def publish_deterministically(session: Session) -> None:
    with deterministic_revision(session.uid):
        session.publish_in_memory(f"by {session.admin}")


def without_revision_heads(content: dict[str, Any]) -> dict[str, Any]:
    """The document's content with the revision list as a set of entries without heads."""
    revisions = sorted(
        ({k: v for k, v in entry.items() if k != "heads"} for entry in content["revisions"]),
        key=lambda entry: entry["uid"],
    )
    return {**content, "revisions": revisions}


def check_rulebase(state: DomainState) -> None:
    for layer in state.layers.values():
        uids = [rule["uid"] for rule in state.rulebase(layer.uid)]
        assert sorted(uids) == sorted(layer.rules)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.lists(EDITS, max_size=8), min_size=2, max_size=3))
def test_publishing_in_any_order_converges(drafts: list[list[tuple[str, int, int]]]) -> None:
    # Each draft on its own server (a copy of the same base), published there as one
    # change; the draft restored from its stored edits publishes the same content.
    changes = []
    for number, edits in enumerate(drafts):
        server = load_base()
        session = Session.open(
            server, admin=f"admin{number}", server=f"s{number}", uid=f"s{number}"
        )
        run_edits(session, edits)
        restored = Session.restore(
            load_base(), uid=session.uid, admin=session.admin, server=session.server,
            base_heads=session.base_heads, changes=session.take_unsaved_changes(),
        )  # fmt: skip
        assert restored.view == session.view
        publish_deterministically(session)
        assert server.state == full_read(server.doc)
        changes.append(server.doc)

    # Every order in which the publishes reach a server gives identical heads and content.
    expected = None
    for order in itertools.permutations(changes):
        copy = load_base()
        for published in order:
            copy.doc.merge(published)
        content = read(copy.doc)
        assert copy.state == DomainState.from_plain(content)
        check_rulebase(copy.state)
        if expected is None:
            expected = (sorted(copy.heads()), content)
        assert (sorted(copy.heads()), content) == expected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.integers(2, 3),
    st.lists(
        st.tuples(st.integers(0, 2), st.lists(EDITS, min_size=1, max_size=5), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=8),
)
def test_refreshed_views_equal_full_reads_after_any_merges(
    servers: int,
    rounds: list[tuple[int, list[tuple[str, int, int]], bool]],
    merges: list[tuple[int, int]],
) -> None:
    """Servers publish drafts and merge each other's documents in any order; every view
    refreshed along the way equals a full read, and none needed one."""
    copies = [load_base() for _ in range(servers)]
    for copy in copies:
        _ = copy.state  # the one full read each server makes
    pending = list(merges)
    for step, (author, edits, merge_after) in enumerate(rounds):
        domain = copies[author % servers]
        session = Session.open(domain, admin=f"a{step}", server=f"s{author}", uid=f"p{step}")
        run_edits(session, edits)
        with no_full_reads():
            publish(session)
        if merge_after and pending:
            into, source = pending.pop(0)
            merge_and_check(copies[into % servers], copies[source % servers])
    for into, source in pending:
        merge_and_check(copies[into % servers], copies[source % servers])
    for copy in copies[1:]:
        merge_and_check(copies[0], copy)
    merge_and_check(copies[-1], copies[0])
    assert copies[-1].state == copies[0].state


def merge_and_check(into: Domain, source: Domain) -> None:
    if into is source:
        return
    with no_full_reads():
        into.doc.merge(source.doc)
        refreshed = into.state
    assert refreshed == full_read(into.doc)


def test_a_record_edited_then_deleted_is_found_without_a_deep_scan() -> None:
    domain = load_base()
    _ = domain.state
    peer = peer_of(domain)
    editor = Session.open(peer, admin="bob", server="s2")
    editor.set_rule({"name": "A", "comments": "soon gone"})
    editor.set_object("service-tcp", {"name": "https", "comments": "soon gone"})
    editor.delete_rule({"name": "A"})
    editor.delete_object("service-tcp", {"name": "https"})
    publish(editor)
    index = domain._refresher.index
    with no_full_reads(), mock.patch.object(index, "scan", wraps=index.scan) as scans:
        domain.doc.merge(peer.doc)
        refreshed = domain.state
    assert refreshed == full_read(domain.doc)
    assert refreshed.find_object("https") is None
    assert [c.args[1] for c in scans.call_args_list] == ["skeleton", "records", "records"]
