"""Past revisions in every history: long-lived sessions publishing in turn on one or two
servers, then every revision shown and reverted to, and open drafts restored after a
restart. Past states are read in place (never with `Document.fork_at`, which panics in
the Automerge core on such histories)."""

from __future__ import annotations

import copy
from typing import Any

from automerge.core import Document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmds.core.docdata import new_actor, unhex_heads
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.revert import content_heads
from crdtmds.core.session import Session
from tests.unit.core.test_domain import EDITS, load_base, run_edits


def content(state: DomainState) -> dict[str, Any]:
    """What a revision must bring back: every object, and each layer's rules in order."""
    return copy.deepcopy(
        {
            "objects": state.objects,
            "layers": {
                uid: (layer.name, layer.rules, layer.ordered_uids())
                for uid, layer in state.layers.items()
            },
        }
    )


def publish(session: Session) -> dict[str, Any]:
    return session.publish_in_memory(f"by {session.admin}")


def sync(servers: list[Domain]) -> None:
    """Every server ends with every change (what gossip does, without the wire)."""
    for into in servers:
        for source in servers:
            if into is not source:
                into.doc.merge(source.doc)


def restart(domain: Domain) -> Domain:
    """The same server after a restart: its document loaded from what it saved."""
    return Domain(domain.document_id, Document.load(domain.doc.save()))


def revision_heads(domain: Domain, revision: dict[str, Any]) -> list[bytes]:
    """The heads of a revision's content (its entry names those it was written on)."""
    return content_heads(domain.doc, unhex_heads(revision["heads"]), revision["uid"])


def check_every_revision(domain: Domain, recorded: dict[str, dict[str, Any]]) -> None:
    revisions = domain.state.revisions
    assert {r["uid"] for r in revisions} == recorded.keys()
    for revision in revisions:
        past = domain.state_at(revision_heads(domain, revision))
        assert content(past) == recorded[revision["uid"]], revision


def two_sessions_publishing_in_turn(domain: Domain) -> dict[str, dict[str, Any]]:
    """The history that made `fork_at` panic: two long-lived sessions on one server,
    three hosts then a publish each, in turn, three rounds."""
    sessions = [Session.open(domain, admin=name, server="s1") for name in ("alice", "bob")]
    recorded: dict[str, dict[str, Any]] = {}
    count = 0
    for _ in range(3):
        for session in sessions:
            for _ in range(3):
                count += 1
                session.add_object("host", {"name": f"h{count}", "ipv4-address": f"10.0.0.{count}"})
            revision = publish(session)
            recorded[revision["uid"]] = content(domain.state)
    return recorded


def test_revisions_of_sessions_publishing_in_turn_read_and_revert() -> None:
    for number in range(6):
        domain = Domain.create("acme", f"doc-{number}")
        recorded = two_sessions_publishing_in_turn(domain)
        check_every_revision(domain, recorded)
        reverter = Session.open(domain, admin="carol", server="s1")
        for revision in list(domain.state.revisions):
            reverter.revert_to(revision["uid"])
            publish(reverter)
            assert content(domain.state) == recorded[revision["uid"]]


def test_a_revision_shows_what_other_sessions_published_while_its_draft_was_open() -> None:
    domain = Domain.create("acme", "doc-raced")
    first = Session.open(domain, admin="alice", server="s1")
    second = Session.open(domain, admin="bob", server="s1")
    first.add_object("host", {"name": "a", "ipv4-address": "10.0.0.1"})
    second.add_object("host", {"name": "b", "ipv4-address": "10.0.0.2"})
    publish(first)
    revision = publish(second)
    past = domain.state_at(revision_heads(domain, revision))
    assert sorted(o["name"] for o in past.objects.values()) == ["a", "b"]


def test_an_empty_draft_edits_from_what_landed_after_its_view_was_read() -> None:
    domain = Domain.create("acme", "doc-late")
    mine = Session.open(domain, admin="alice", server="s1")
    mine.add_object("host", {"name": "a", "ipv4-address": "10.0.0.1"})
    publish(mine)
    assert mine.change_count() == 0  # the emptied draft reads the live document
    other = Session.open(domain, admin="bob", server="s1")
    other.add_object("host", {"name": "b", "ipv4-address": "10.0.0.2"})
    publish(other)
    mine.add_object("host", {"name": "c", "ipv4-address": "10.0.0.3"})
    assert sorted(o["name"] for o in mine.view.objects.values()) == ["a", "b", "c"]
    assert [entry["name"] for entry in mine.show_changes()["added"]] == ["c"]
    publish(mine)
    assert sorted(o["name"] for o in domain.state.objects.values()) == ["a", "b", "c"]


def test_an_aborted_publish_leaves_the_draft_as_it_was() -> None:
    domain = Domain.create("acme", "doc-abort")
    session = Session.open(domain, admin="alice", server="s1")
    session.add_object("host", {"name": "a", "ipv4-address": "10.0.0.1"})
    heads, view = domain.heads(), content(session.view)
    session.abort_publish(session.publish("will fail", new_actor()))
    assert domain.heads() == heads
    assert content(session.view) == view
    assert session.view.revisions == []
    session.add_object("host", {"name": "b", "ipv4-address": "10.0.0.2"})
    publish(session)
    assert sorted(o["name"] for o in domain.state.objects.values()) == ["a", "b"]


STEPS = st.lists(
    st.tuples(st.integers(0, 3), st.lists(EDITS, min_size=1, max_size=4), st.booleans()),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.integers(1, 2),
    st.integers(2, 4),
    STEPS,
    st.lists(st.tuples(st.integers(0, 3), st.lists(EDITS, min_size=1, max_size=3)), max_size=3),
)
def test_every_revision_reads_and_reverts_and_drafts_survive_a_restart(
    server_count: int,
    session_count: int,
    steps: list[tuple[int, list[tuple[str, int, int]], bool]],
    unpublished: list[tuple[int, list[tuple[str, int, int]]]],
) -> None:
    """Two to four long-lived sessions on one or two servers edit and publish in turn,
    servers syncing now and then; every revision then reads as the domain stood right
    after its publish, a revert to each brings that back, and open drafts are restored
    exactly after a restart."""
    servers = [load_base()] + [
        Domain("doc-domain", Document.load(load_base().doc.save())) for _ in range(server_count - 1)
    ]
    sessions = [
        Session.open(servers[n % server_count], admin=f"admin{n}", server=f"s{n % server_count}")
        for n in range(session_count)
    ]
    recorded = {
        revision["uid"]: content(servers[0].state_at(revision_heads(servers[0], revision)))
        for revision in servers[0].state.revisions
    }
    for who, edits, then_sync in steps:
        session = sessions[who % session_count]
        run_edits(session, edits)
        if session.has_changes():
            revision = publish(session)
            recorded[revision["uid"]] = content(session.domain.state)
        if then_sync:
            sync(servers)

    # Open drafts are restored exactly by a restarted server.
    for who, edits in unpublished:
        run_edits(sessions[who % session_count], edits)
    for session in sessions:
        restarted = restart(session.domain)
        restored = Session.restore(
            restarted,
            uid=session.uid,
            admin=session.admin,
            server=session.server,
            base_heads=session.base_heads,
            changes=session.stored_edits,
        )
        assert content(restored.view) == content(session.view)
        assert restored.show_changes() == session.show_changes()

    sync(servers)
    for server in servers:
        check_every_revision(server, recorded)
    reverter = Session.open(servers[-1], admin="reverter", server="sx")
    for revision in list(servers[-1].state.revisions):
        reverter.revert_to(revision["uid"])
        if reverter.has_changes():
            publish(reverter)
        assert content(servers[-1].state) == recorded[revision["uid"]]
