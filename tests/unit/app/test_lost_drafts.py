"""A start's comparison of the session journal with the drafts SQLite holds."""

from __future__ import annotations

from datetime import UTC, datetime

from crdtmds.app import lost_drafts
from crdtmds.storage import JournalEntry, SessionRecord


def entry(uid: str, document_id: str = "doc-1", lost_at: float | None = None) -> JournalEntry:
    return JournalEntry(uid, "alice", "acme", document_id, 1000.0, 1010.0, lost_at)


def record(uid: str, changes: int) -> SessionRecord:
    return SessionRecord(
        uid=uid, document_id="doc-1", domain="acme", admin="alice", name="", description="",
        base_heads=[], actor=b"a", created_at=900.0, last_active=2000.0,
        changes=[b"c"] * changes,
    )  # fmt: skip


def reconcile(journal, stored, published=(), deleted=()) -> lost_drafts.Reconciled:
    return lost_drafts.reconcile(
        journal,
        stored,
        now=5000.0,
        deleted=lambda d: d in deleted,
        published_since=lambda e: e.uid in published,
    )


def test_a_draft_missing_from_the_database_is_lost() -> None:
    result = reconcile([entry("gone"), entry("here")], [record("here", 2)])
    assert [e.uid for e in result.newly_lost] == ["gone"]
    assert result.newly_lost[0].lost_at == 5000.0
    by_uid = {e.uid: e for e in result.entries}
    assert by_uid["gone"].lost_at == 5000.0
    assert by_uid["here"].since == 1000.0 and by_uid["here"].last_active == 2000.0


def test_a_stored_draft_without_its_changes_is_lost_unless_it_was_published() -> None:
    journal = [entry("emptied"), entry("published")]
    stored = [record("emptied", 0), record("published", 0)]
    result = reconcile(journal, stored, published={"published"})
    assert [e.uid for e in result.newly_lost] == ["emptied"]
    assert [e.uid for e in result.entries] == ["emptied"]


def test_drafts_with_changes_are_listed_and_earlier_losses_kept_quietly() -> None:
    earlier = entry("old", lost_at=10.0)
    result = reconcile([earlier, entry("deleted-domain", "doc-9")], [record("new", 1)],
                       deleted={"doc-9"})  # fmt: skip
    assert result.newly_lost == []
    assert {e.uid: e.lost_at for e in result.entries} == {"old": 10.0, "new": None}
    assert result.entries[1].since == 2000.0  # first seen now: its last activity


def test_published_after_reads_the_revisions_of_the_session() -> None:
    def at(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")

    later = {"session": "s1", "published-at": at(1000.5)}
    assert lost_drafts.published_after([later], entry("s1"))
    assert not lost_drafts.published_after([later], entry("s2"))
    assert not lost_drafts.published_after(
        [{"session": "s1", "published-at": at(900)}], entry("s1")
    )
    assert not lost_drafts.published_after([{"session": "s1", "published-at": "?"}], entry("s1"))


def test_the_warnings_name_the_session_its_administrator_and_domain() -> None:
    text = lost_drafts.start_warning(entry("s1"))
    assert text.startswith("session s1 of 'alice' on 'acme' (last active 1970-01-01T00:16:50")
    assert "is missing from the database" in text and "-wal file removed?" in text
    assert "s1" in lost_drafts.login_warning(entry("s1", lost_at=5000.0))
