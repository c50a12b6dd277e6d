"""A revision's content is read at the change that wrote its entry, found without
listing every change after the revision when the domain knows it: written here, or
received and read by the view's refresh (`crdtmds.core.revision_changes`)."""

from __future__ import annotations

from typing import Any

from automerge.core import ROOT, Document, ScalarType

from crdtmds.core.docdata import has_heads, new_actor, unhex_heads
from crdtmds.core.domain import Domain
from crdtmds.core.revert import content_heads, revision_content_heads, revision_state
from crdtmds.core.session import Session
from tests.unit.core.test_domain import load_base, peer_of
from tests.unit.core.test_revisions import content, restart


class CountingDocument:
    """A document that counts its `get_changes` calls (each re-encodes changes)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.listings = 0

    def get_changes(self, heads: list[bytes]) -> Any:
        self.listings += 1
        return self.doc.get_changes(heads)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.doc, name)


def publish_hosts(
    domain: Domain, count: int, first: int = 0, actor: bytes | None = None
) -> dict[str, Any]:
    session = Session.open(domain, admin="alice", server="s1")
    for i in range(first, first + count):
        session.add_object("host", {"name": f"h{i}", "ipv4-address": f"10.0.{i >> 8}.{i & 255}"})
    return session.publish_in_memory("hosts", actor)


def test_a_revision_published_here_is_read_without_listing_later_changes() -> None:
    domain = load_base()
    first = publish_hosts(domain, 2)
    expected = content(domain.state)
    publish_hosts(domain, 50, first=2)  # a large change after the revision
    counting = CountingDocument(domain.doc)
    heads = revision_content_heads(domain, counting, first)  # type: ignore[arg-type]
    assert counting.listings == 0
    assert heads == [domain.revision_changes.known(first["uid"])]
    assert content(domain.state_at(heads)) == expected
    assert content(revision_state(domain, first)) == expected


def test_a_received_revision_is_found_among_the_changes_the_refresh_read() -> None:
    origin = load_base()
    receiver = peer_of(origin)
    assert receiver.state.name  # the view exists before the changes arrive
    first = publish_hosts(origin, 3)
    expected = content(origin.state)
    assert first["uid"] not in {r["uid"] for r in receiver.state.revisions}
    receiver.doc.merge(origin.doc)
    assert receiver.state.revisions[-1]["uid"] == first["uid"]  # the refresh reads it
    publish_hosts(origin, 40, first=3)
    receiver.doc.merge(origin.doc)
    assert receiver.revision_changes.known(first["uid"]) is None
    counting = CountingDocument(receiver.doc)
    heads = revision_content_heads(receiver, counting, first)  # type: ignore[arg-type]
    assert counting.listings == 0
    assert content(receiver.state_at(heads)) == expected
    assert receiver.revision_changes.known(first["uid"]) == heads[0]  # remembered


def test_an_unknown_revision_change_is_still_found_by_listing_the_changes() -> None:
    domain = load_base()
    first = publish_hosts(domain, 2)
    expected = content(domain.state)
    publish_hosts(domain, 5, first=2)
    restarted = restart(domain)  # nothing known in memory
    counting = CountingDocument(restarted.doc)
    heads = revision_content_heads(restarted, counting, first)  # type: ignore[arg-type]
    assert counting.listings == 1
    assert content(restarted.state_at(heads)) == expected
    again = CountingDocument(restarted.doc)
    assert revision_content_heads(restarted, again, first) == heads  # type: ignore[arg-type]
    assert again.listings == 0


def test_a_publish_whose_change_also_names_its_actors_last_change_is_found() -> None:
    """A server's pooled actor publishes again after others wrote: Automerge makes the
    change depend on the heads and on that actor's previous change."""
    domain = load_base()
    actor = new_actor()
    publish_hosts(domain, 1, actor=actor)
    publish_hosts(domain, 1, first=1)  # another actor writes on top
    again = publish_hosts(domain, 1, first=2, actor=actor)
    expected = content(domain.state)
    publish_hosts(domain, 1, first=3)
    change = domain.revision_changes.known(again["uid"])
    assert change is not None
    deps = next(c.deps for c in domain.doc.get_changes([]) if c.hash == change)
    assert set(unhex_heads(again["heads"])) < set(deps)  # the extra dependency
    restarted = restart(domain)  # found by listing the changes
    assert (
        content(restarted.state_at(revision_content_heads(restarted, restarted.doc, again)))
        == expected
    )
    assert revision_content_heads(domain, domain.doc, again) == [change]  # known


def test_a_wrong_candidate_is_checked_and_passed_over() -> None:
    domain = load_base()
    first = publish_hosts(domain, 2)
    second = publish_hosts(domain, 2, first=2)
    right = content_heads(domain.doc, unhex_heads(first["heads"]), first["uid"])
    wrong = content_heads(domain.doc, unhex_heads(second["heads"]), second["uid"])
    assert right != wrong
    found = content_heads(domain.doc, unhex_heads(first["heads"]), first["uid"], [wrong[0]])
    assert found == right


def test_has_heads_reads_each_head_and_lists_changes_only_when_unsure() -> None:
    domain = load_base()
    publish_hosts(domain, 2)
    past = domain.heads()
    publish_hosts(domain, 2, first=2)
    counting = CountingDocument(domain.doc)
    assert has_heads(counting, past)  # type: ignore[arg-type]
    assert has_heads(counting, [*past, *domain.heads()])  # type: ignore[arg-type]
    assert not has_heads(counting, [*past, b"\x07" * 32])  # type: ignore[arg-type]
    assert has_heads(counting, [])  # type: ignore[arg-type]
    assert counting.listings == 1  # only for the unknown head
    empty_root = Document()
    with empty_root.transaction() as tx:  # a change that leaves the root empty
        tx.put(ROOT, "x", ScalarType.Str, "y")
        tx.delete(ROOT, "x")
    assert has_heads(empty_root, empty_root.get_heads())
