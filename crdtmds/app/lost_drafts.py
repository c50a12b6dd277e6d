"""Drafts the database lost: the session journal (`storage/session_journal.py`) compared,
at a start, with the drafts SQLite still holds, and the words that tell operators (the
log) and administrators (a `continue-last-session` login) about each one.

A journal entry is a draft that had stored changes. At a start it is missing when the
database has no row for it, or has the row but none of its changes while no revision of
that session was published since the entry was made (a publish empties the stored draft;
the journal learns of it just after, so a crash in between leaves such an entry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from crdtmds.storage import JournalEntry, SessionRecord

PUBLISH_CLOCK_SLACK = 1.0
"""Seconds a revision's `published-at` (milliseconds, written by this server) may lie
before the entry's `since` and still count as published after it."""


@dataclass(slots=True)
class Reconciled:
    """The journal a start writes, and the drafts it found missing this time."""

    entries: list[JournalEntry]
    newly_lost: list[JournalEntry]


def reconcile(
    journal: Iterable[JournalEntry],
    stored: Sequence[SessionRecord],
    *,
    now: float,
    deleted: Callable[[str], bool],
    published_since: Callable[[JournalEntry], bool],
) -> Reconciled:
    """Compare the journal with the stored drafts. Every stored draft with changes gets an
    entry (keeping when it was first recorded); entries missing from the database are
    marked lost, and those lost earlier (not yet told to their administrator) are kept.
    Entries of deleted domains, and of drafts that are stored but empty because they
    were published, discarded or closed, go."""
    by_uid = {record.uid: record for record in stored}
    kept: list[JournalEntry] = []
    newly_lost: list[JournalEntry] = []
    old: dict[str, JournalEntry] = {}
    for entry in journal:
        old[entry.uid] = entry
        record = by_uid.get(entry.uid)
        if deleted(entry.document_id) or (record is not None and record.changes):
            continue
        if entry.lost_at is not None:
            kept.append(entry)
        elif record is None or not published_since(entry):
            lost = replace(entry, lost_at=now)
            kept.append(lost)
            newly_lost.append(lost)
    for record in stored:
        if record.changes:
            since = old[record.uid].since if record.uid in old else record.last_active
            kept.append(entry_of_record(record, since))
    return Reconciled(kept, newly_lost)


def entry_of_record(record: SessionRecord, since: float) -> JournalEntry:
    return JournalEntry(
        uid=record.uid,
        admin=record.admin,
        domain=record.domain,
        document_id=record.document_id,
        since=since,
        last_active=record.last_active,
    )


def published_after(revisions: Iterable[dict[str, object]], entry: JournalEntry) -> bool:
    """Whether one of `revisions` was published by the entry's session after its `since`."""
    for revision in revisions:
        if revision.get("session") != entry.uid:
            continue
        published_at = revision.get("published-at")
        try:
            when = datetime.fromisoformat(str(published_at)).timestamp()
        except ValueError:
            continue
        if when >= entry.since - PUBLISH_CLOCK_SLACK:
            return True
    return False


def start_warning(entry: JournalEntry) -> str:
    """The log line of a start that finds the draft missing."""
    return (
        f"session {entry.uid} of {entry.admin!r} on {entry.domain!r} "
        f"(last active {when(entry.last_active)}) is missing from the database: its "
        "unpublished changes were lost (was the -wal file removed?)"
    )


def login_warning(entry: JournalEntry) -> str:
    """What a login that asked to continue the draft is told."""
    return (
        f"your unpublished session {entry.uid} on domain {entry.domain!r} "
        f"(last active {when(entry.last_active)}) was lost from this server's database "
        f"(found missing at the start of {when(entry.lost_at or 0.0)}): there is no draft "
        "to continue, its changes must be made again; this login works in a new session"
    )


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
