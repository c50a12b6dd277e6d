"""Epochs of a domain: every server starts the same epoch document from a cut, the
content carries over, publishes concurrent with the cut are carried into it, and every
revision of every epoch stays listed and readable."""

from __future__ import annotations

from typing import Any

import pytest
from automerge.core import ROOT, Document

from crdtmds.core.docdata import fork_with_actor, new_actor, put_value, read
from crdtmds.core.domain import Domain
from crdtmds.core.epochs import (
    Cut,
    EpochChain,
    carried_heads,
    carry_late,
    cut_of,
    start_epoch,
)
from crdtmds.core.revert import revision_state
from crdtmds.core.session import Session
from crdtmds.errors import ValidationError
from tests.unit.core.test_revisions import content, publish


def _server(domain: Domain, name: str) -> Domain:
    """Another server's copy of the domain, writing as its own actor."""
    return Domain(domain.document_id, fork_with_actor(domain.doc, new_actor()))


def _session(domain: Domain, server: str) -> Session:
    return Session.open(domain, admin="admin", server=server)


def _add_host(domain: Domain, server: str, name: str, address: str) -> dict[str, Any]:
    session = _session(domain, server)
    session.add_object("host", {"name": name, "ipv4-address": address})
    return publish(session)


def _add_rule(domain: Domain, server: str, name: str, position: Any = "bottom") -> None:
    session = _session(domain, server)
    session.add_rule({"name": name, "position": position, "action": "Accept"})
    publish(session)


def _exchange(a: Domain, b: Domain) -> None:
    a.doc.merge(b.doc)
    b.doc.merge(a.doc)


def _history() -> tuple[Domain, Domain]:
    """Two servers that published in turn and concurrently, then synced."""
    a = Domain.create("epochs", "doc-0")
    b = _server(a, "b")
    _add_host(a, "a", "web", "10.0.0.1")
    _add_rule(a, "a", "first")
    _add_host(b, "b", "db", "10.0.0.2")  # concurrent with a's publishes
    _exchange(a, b)
    _add_rule(b, "b", "second")
    _exchange(a, b)
    return a, b


def _object_uid(domain: Domain, name: str) -> str:
    return next(uid for uid, o in domain.state.objects.items() if o["name"] == name)


def _cut(domain: Domain) -> Cut:
    """The first epoch's cut at the domain's current heads."""
    return Cut(1, domain.document_id, tuple(domain.heads()))


def _epoch_domain(previous: Domain, cut: Cut) -> Domain:
    return Domain("doc-1", start_epoch(previous.doc, cut))


def _writing_epoch(previous: Domain, cut: Cut) -> Domain:
    """The epoch as a server writing into it holds it: under an actor of its own."""
    epoch = _epoch_domain(previous, cut)
    epoch.doc.set_actor(new_actor())
    return epoch


def test_every_server_starts_the_same_epoch_document() -> None:
    a, b = _history()
    assert a.heads() == b.heads()
    cut = _cut(a)
    first, second = start_epoch(a.doc, cut), start_epoch(b.doc, cut)
    assert first.get_heads() == second.get_heads()
    assert first.save() == second.save()
    # Merging the two copies adds nothing: they hold one and the same change.
    first.merge(second)
    assert len(first.get_changes([])) == 1


def test_the_epoch_holds_the_content_at_the_cut_and_no_revisions() -> None:
    a, _ = _history()
    cut = _cut(a)
    _add_host(a, "a", "after-cut", "10.0.0.9")  # later than the cut: not in the epoch
    epoch = _epoch_domain(a, cut)
    at_cut = a.state_at(cut.heads)
    assert content(epoch.state) == content(at_cut)
    assert epoch.state.name == at_cut.name == "epochs"
    assert epoch.state.revisions == []
    assert cut_of(epoch.doc) == cut
    assert cut_of(a.doc) is None


def test_a_cut_the_document_does_not_hold_is_refused() -> None:
    a, _ = _history()
    with pytest.raises(ValidationError):
        start_epoch(a.doc, Cut(1, a.document_id, (b"\x01" * 32,)))
    with pytest.raises(ValidationError):
        start_epoch(a.doc, Cut(1, a.document_id, ()))


def test_sessions_publish_into_the_epoch_and_servers_converge() -> None:
    a, b = _history()
    cut = _cut(a)
    eb = _writing_epoch(b, cut)
    ea = _writing_epoch(a, cut)
    _add_host(ea, "a", "new-a", "10.1.0.1")
    _add_rule(eb, "b", "new-b", "top")
    _exchange(ea, eb)
    assert ea.heads() == eb.heads()
    assert read(ea.doc) == read(eb.doc)
    assert {r["server"] for r in ea.state.revisions} == {"a", "b"}
    assert {o["name"] for o in ea.state.objects.values()} >= {"web", "db", "new-a"}


def test_publishes_concurrent_with_the_cut_are_carried_by_every_server() -> None:
    a, b = _history()
    cut = _cut(a)
    # a starts the epoch; b, not knowing yet, publishes three more times into the old
    # document: an edit of a field, a new rule on top, a deleted host.
    ea = _writing_epoch(a, cut)
    web = _object_uid(b, "web")
    session = _session(b, "b")
    session.set_object("host", {"uid": web, "comments": "late"})
    session.add_rule({"name": "late-rule", "position": "top", "action": "Drop"})
    publish(session)
    db = _object_uid(b, "db")
    session = _session(b, "b")
    session.delete_object("host", {"uid": db})
    publish(session)
    # Meanwhile a publishes into the epoch: another field of the same host.
    session = _session(ea, "a")
    session.set_object("host", {"uid": web, "color": "red"})
    publish(session)
    with b.doc.transaction() as tx:  # a rename, late too
        put_value(tx, ROOT, "name", "renamed")
    # The late changes reach a; b starts the epoch too. Both carry them.
    a.doc.merge(b.doc)
    eb = _writing_epoch(b, cut)
    carried_a = carry_late(a.doc, cut.heads, ea.doc)
    carried_b = carry_late(b.doc, cut.heads, eb.doc)
    assert carried_a == carried_b == a.heads()
    _exchange(ea, eb)
    assert ea.heads() == eb.heads()
    state = ea.state
    assert state.name == "renamed"
    assert state.objects[web]["comments"] == "late"
    assert state.objects[web]["color"] == "red"  # the epoch's own edit survives
    assert db not in state.objects
    layer = next(iter(state.layers.values()))
    names = [layer.rules[uid]["name"] for uid in layer.ordered_uids()]
    assert names == ["late-rule", "first", "second"]
    # Carrying again with nothing new writes nothing.
    heads = ea.heads()
    assert carry_late(a.doc, carried_a, ea.doc) == carried_a
    assert ea.heads() == heads


def test_every_revision_of_every_epoch_is_listed_once_and_readable() -> None:
    a, b = _history()
    old_revisions = list(a.state.revisions)
    recorded = {r["uid"]: content(revision_state(a, r)) for r in old_revisions}
    cut = _cut(a)
    ea = _writing_epoch(a, cut)
    late = _add_host(b, "b", "late", "10.0.0.7")  # concurrent with the cut
    a.doc.merge(b.doc)
    carry_late(a.doc, cut.heads, ea.doc)
    late_content = content(b.state)
    new = _add_host(ea, "a", "in-epoch", "10.1.0.2")
    chain = EpochChain([a.doc, ea.doc])
    listed = chain.revisions()
    uids = [r["uid"] for r in listed]
    assert uids == [*(r["uid"] for r in old_revisions), late["uid"], new["uid"]]
    for revision in old_revisions:
        assert content(chain.state_of(revision)) == recorded[revision["uid"]]
    # The late revision's heads are in the previous document: read there.
    assert content(chain.state_of(late)) == late_content
    assert content(chain.state_of(new)) == content(ea.state)


def test_an_epoch_document_survives_save_and_load() -> None:
    a, _ = _history()
    cut = _cut(a)
    epoch = start_epoch(a.doc, cut)
    loaded = Document.load(epoch.save())
    assert loaded.get_heads() == epoch.get_heads()
    assert cut_of(loaded) == cut
    assert read(loaded) == read(epoch)


def test_what_one_server_carried_is_not_carried_again_over_later_edits() -> None:
    a, b = _history()
    cut = _cut(a)
    ea = _writing_epoch(a, cut)
    web = _object_uid(b, "web")
    session = _session(b, "b")
    session.set_object("host", {"uid": web, "comments": "late"})
    publish(session)  # late: into the previous document
    a.doc.merge(b.doc)
    carry_late(a.doc, carried_heads(ea.doc, a.doc), ea.doc, "a")
    assert carried_heads(ea.doc, a.doc) == sorted(a.heads())
    # A newer edit in the epoch; then another server, seeing what a carried, has nothing
    # left to carry and leaves the newer edit alone.
    session = _session(ea, "a")
    session.set_object("host", {"uid": web, "comments": "newer"})
    publish(session)
    eb = Domain("doc-1", ea.doc.fork())
    eb.doc.set_actor(new_actor())
    heads = eb.heads()
    carry_late(b.doc, carried_heads(eb.doc, b.doc), eb.doc, "b")
    assert eb.heads() == heads
    assert eb.state.objects[web]["comments"] == "newer"
