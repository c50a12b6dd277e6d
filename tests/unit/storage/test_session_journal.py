"""The session journal file (`sessions.index`): written whole or not at all, owner-only,
and a file that cannot be read is reported and replaced, never a crash."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from crdtmds.storage import JOURNAL_FILE, JournalEntry, SessionJournal, session_journal


def entry(uid: str, since: float = 100.0, **more: object) -> JournalEntry:
    fields = {"admin": "alice", "domain": "acme", "document_id": "doc-1", "since": since,
              "last_active": since + 5, **more}  # fmt: skip
    return JournalEntry(uid=uid, **fields)  # type: ignore[arg-type]


async def test_entries_written_owner_only_and_read_back(tmp_path: Path) -> None:
    journal, problem = SessionJournal.load(tmp_path)
    assert problem is None and journal.entries == {}
    assert not (tmp_path / JOURNAL_FILE).exists()  # nothing written until something changes
    await journal.update([entry("s1"), entry("s2", lost_at=300.0)])
    path = tmp_path / JOURNAL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, problem = SessionJournal.load(tmp_path)
    assert problem is None
    assert again.entries == {"s1": entry("s1"), "s2": entry("s2", lost_at=300.0)}
    assert [e.uid for e in again.lost()] == ["s2"]
    await again.update(remove=["s1"])
    assert list(SessionJournal.load(tmp_path)[0].entries) == ["s2"]


async def test_unchanged_entries_write_nothing(tmp_path: Path, monkeypatch) -> None:
    journal, _ = SessionJournal.load(tmp_path)
    await journal.update([entry("s1")])
    writes: list[Path] = []
    monkeypatch.setattr(session_journal, "write_atomically", lambda p, d: writes.append(p))
    await journal.update([entry("s1")], remove=["unknown"])
    assert writes == []


async def test_a_rewrite_interrupted_before_the_rename_leaves_the_old_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    journal, _ = SessionJournal.load(tmp_path)
    await journal.update([entry("s1")])
    before = (tmp_path / JOURNAL_FILE).read_bytes()

    def crash(source: object, target: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with caplog.at_level(logging.WARNING, "crdtmds.storage"):
        await journal.update([entry("s2")])  # logged, not raised: the drafts are in SQLite
    assert "cannot write the session journal" in caplog.text
    assert (tmp_path / JOURNAL_FILE).read_bytes() == before
    assert list(SessionJournal.load(tmp_path)[0].entries) == ["s1"]
    monkeypatch.undo()
    leftover = tmp_path / (JOURNAL_FILE + ".tmp")
    leftover.chmod(0o644)  # a leftover temporary file with a looser mode
    await journal.flush()
    assert sorted(SessionJournal.load(tmp_path)[0].entries) == ["s1", "s2"]
    assert stat.S_IMODE((tmp_path / JOURNAL_FILE).stat().st_mode) == 0o600
    assert not leftover.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff garbage",
        b'{"version": 1, "sessions": [',  # cut short
        b"[]",
        b'{"version": 99, "sessions": []}',
        b'{"version": 1, "sessions": {}}',
        b'{"version": 1, "sessions": [{"uid": "s1"}]}',
        b'{"version": 1, "sessions": [{"uid": "s1", "admin": "a", "domain": "d",'
        b' "document-id": "x", "since": "yesterday", "last-active": 1}]}',
        b'{"version": 1, "sessions": [7]}',
    ],
)
async def test_a_corrupt_journal_is_reported_and_started_afresh(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(content)
    journal, problem = SessionJournal.load(tmp_path)
    assert problem and journal.entries == {}
    await journal.update([entry("s1")])
    assert json.loads(path.read_text())["sessions"][0]["uid"] == "s1"


async def test_an_unreadable_journal_is_reported(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_FILE).mkdir()  # a directory where the file should be
    journal, problem = SessionJournal.load(tmp_path)
    assert problem and "cannot read" in problem and journal.entries == {}
    assert await journal.flush() is False  # cannot replace it either: logged, not raised


async def test_background_rewrites_keep_their_order(tmp_path: Path) -> None:
    journal, _ = SessionJournal.load(tmp_path)
    for n in range(5):
        journal.update_soon([entry(f"s{n}")])
    journal.update_soon(remove=["s0", "s3"])
    await journal.drain()
    assert sorted(SessionJournal.load(tmp_path)[0].entries) == ["s1", "s2", "s4"]


def test_a_journal_without_a_file_stays_in_memory() -> None:
    journal = SessionJournal()
    journal.update_soon([entry("s1")])  # no event loop, no file: only memory changes
    assert "s1" in journal
