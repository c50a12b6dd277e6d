"""Drafts the database lost are told, not hidden: the session journal beside the database
lists drafts with stored changes, a start logs those it cannot find, and a login that
asks to continue one hears that it was lost. Losing the `-wal` file is stood in for here by
removing the draft's rows with the server stopped (tests/scenario/test_lost_wal.py removes
the real `-wal` file of a killed server process)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from crdtmds.config import DATABASE_FILE
from crdtmds.server import Server
from crdtmds.storage import JOURNAL_FILE
from tests.helpers.api_doors import connect, host


def journal_uids(data: Path) -> list[str]:
    return [e["uid"] for e in json.loads((data / JOURNAL_FILE).read_text())["sessions"]]


def remove_draft_rows(data: Path, uid: str) -> None:
    with sqlite3.connect(data / DATABASE_FILE) as db:
        db.execute("DELETE FROM session_changes WHERE session_uid = ?", (uid,))
        db.execute("DELETE FROM sessions WHERE uid = ?", (uid,))


async def test_a_lost_draft_is_logged_at_start_and_told_to_its_administrator(
    node: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = connect(node.api)
    lost = await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    await admin.ok("add-host", **host("db", "192.0.2.11"))  # not a journal change
    assert journal_uids(tmp_path) == [lost["uid"]]
    await node.close()
    remove_draft_rows(tmp_path, lost["uid"])
    with caplog.at_level(logging.WARNING, "crdtmds.sessions"):
        reopened = await Server.open(tmp_path)
    try:
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "crdtmds.sessions"]
        assert warning.startswith(f"session {lost['uid']} of 'alice' on 'acme' (last active ")
        assert "its unpublished changes were lost (was the -wal file removed?)" in warning
        admin = connect(reopened.api)
        other = await connect(reopened.api).login("bob", domain="globex", **{
            "continue-last-session": True})  # fmt: skip
        assert "warnings" not in other  # another administrator's loss is not his
        fresh = await admin.login("alice", **{"continue-last-session": True})
        assert fresh["uid"] != lost["uid"]
        (told,) = fresh["warnings"]
        assert lost["uid"] in told["message"] and "lost" in told["message"]
        again = await connect(reopened.api).login("alice", **{"continue-last-session": True})
        assert "warnings" not in again  # told once
    finally:
        await reopened.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, "crdtmds.sessions"):
        await (await Server.open(tmp_path)).close()
    assert "missing from the database" not in caplog.text


async def test_published_discarded_and_closed_drafts_leave_the_journal(
    node: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher, discarder, leaver = (connect(node.api) for _ in range(3))
    for admin, name in ((publisher, "a"), (discarder, "b"), (leaver, "c")):
        await admin.login("alice")
        await admin.ok("add-host", **host(name, "192.0.2.10"))
    assert len(journal_uids(tmp_path)) == 3
    await publisher.ok("publish")
    await discarder.ok("discard")
    await leaver.ok("discard")
    await leaver.ok("logout")
    await node.sessions.journal.drain()
    assert journal_uids(tmp_path) == []
    await publisher.ok("add-host", **host("d", "192.0.2.12"))  # a first change again
    assert journal_uids(tmp_path) == [(await publisher.ok("show-session"))["uid"]]
    await node.close()
    with caplog.at_level(logging.WARNING, "crdtmds.sessions"):
        await (await Server.open(tmp_path)).close()
    assert "missing from the database" not in caplog.text


async def test_a_publish_the_journal_missed_is_not_taken_for_a_loss(
    node: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = connect(node.api)
    await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    await admin.ok("publish")
    await node.sessions.journal.drain()
    await node.close()
    (tmp_path / JOURNAL_FILE).write_bytes(journal)  # as if killed before the rewrite
    with caplog.at_level(logging.WARNING, "crdtmds.sessions"):
        reopened = await Server.open(tmp_path)
    await reopened.close()
    assert "missing from the database" not in caplog.text
    assert journal_uids(tmp_path) == []


async def test_a_corrupt_journal_is_reported_and_rebuilt_from_the_database(
    node: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = connect(node.api)
    draft = await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    await node.close()
    (tmp_path / JOURNAL_FILE).write_bytes(b"\x00not a journal")
    with caplog.at_level(logging.WARNING, "crdtmds.sessions"):
        reopened = await Server.open(tmp_path)
    try:
        assert "session journal" in caplog.text and "unreadable" in caplog.text
        assert journal_uids(tmp_path) == [draft["uid"]]
        resumed = await connect(reopened.api).login("alice", **{"continue-last-session": True})
        assert resumed["uid"] == draft["uid"] and "warnings" not in resumed
    finally:
        await reopened.close()
