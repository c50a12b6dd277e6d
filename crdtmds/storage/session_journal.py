"""The session journal: a small file beside the database (`sessions.index`) that lists
the drafts holding stored changes, so that a start can tell when SQLite lost some.

SQLite in WAL mode keeps recent commits in the `-wal` file until a checkpoint copies them
into the database file; a `-wal` file removed after a crash takes those commits with it,
and the database opens as if they had never been. The journal lives outside SQLite, so it
survives that loss. It changes only when a draft gains its first stored change and when
one is published, discarded or closed, never on every edit; each rewrite is atomic
(write a temporary file, fsync it, rename it over the journal, fsync the directory), and
the file is readable by its owner only, like every file of a data directory.

A journal that cannot be read is reported and started afresh: it is advice about the
database, never a reason to refuse a start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

JOURNAL_FILE = "sessions.index"
JOURNAL_VERSION = 1

log = logging.getLogger("crdtmds.storage")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A draft that holds (or held, when `lost_at` is set) stored changes."""

    uid: str
    admin: str
    domain: str
    document_id: str
    since: float
    """When the draft's first stored change was recorded (epoch seconds)."""
    last_active: float
    """The draft's last activity known when the journal was last written."""
    lost_at: float | None = None
    """When a start found the draft missing from the database; None while it is not."""

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "admin": self.admin,
            "domain": self.domain,
            "document-id": self.document_id,
            "since": self.since,
            "last-active": self.last_active,
            "lost-at": self.lost_at,
        }

    @classmethod
    def from_json(cls, item: Any) -> JournalEntry:
        if not isinstance(item, Mapping):
            raise ValueError("an entry is not an object")
        texts = [item.get(k) for k in ("uid", "admin", "domain", "document-id")]
        times = [item.get(k) for k in ("since", "last-active")]
        lost_at = item.get("lost-at")
        if not all(isinstance(t, str) for t in texts) or not all(_is_time(t) for t in times):
            raise ValueError(f"entry {item.get('uid')!r} lacks a field or has a wrong type")
        if lost_at is not None and not _is_time(lost_at):
            raise ValueError(f"entry {item.get('uid')!r} has a wrong 'lost-at'")
        uid, admin, domain, document_id = texts
        since, last_active = times
        return cls(uid, admin, domain, document_id, since, last_active, lost_at)

    def touched(self, last_active: float) -> JournalEntry:
        return self if last_active <= self.last_active else replace(self, last_active=last_active)


class SessionJournal:
    """The journal of one data directory; `path` None keeps it in memory only (a server
    built without a data directory, as some tests do)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: dict[str, JournalEntry] = {}
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def load(cls, data_dir: Path) -> tuple[SessionJournal, str | None]:
        """The journal of `data_dir` (empty when there is none yet), and what was wrong
        with its file if it could not be read (the journal is then empty)."""
        journal = cls(data_dir / JOURNAL_FILE)
        try:
            text = journal.path.read_text(encoding="utf-8")  # type: ignore[union-attr]
        except FileNotFoundError:
            return journal, None
        except (OSError, UnicodeDecodeError) as exc:
            return journal, f"cannot read it: {exc}"
        try:
            entries = parse(text)
        except ValueError as exc:
            return journal, str(exc)
        journal.entries = {entry.uid: entry for entry in entries}
        return journal, None

    def __contains__(self, uid: object) -> bool:
        return uid in self.entries

    def lost(self) -> list[JournalEntry]:
        return [entry for entry in self.entries.values() if entry.lost_at is not None]

    async def update(self, upsert: Iterable[JournalEntry] = (), remove: Iterable[str] = ()) -> None:
        """Change the entries and rewrite the file, if anything changed."""
        if self.change(upsert, remove):
            await self.flush()

    def update_soon(self, upsert: Iterable[JournalEntry] = (), remove: Iterable[str] = ()) -> None:
        """Change the entries now and rewrite the file in the background (`drain` awaits
        it; without a running event loop, at the next rewrite). Rewrites never overtake
        one another, and each writes the entries as they are when it runs."""
        if not self.change(upsert, remove):
            return
        try:
            task = asyncio.get_running_loop().create_task(self.flush())
        except RuntimeError:
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def change(self, upsert: Iterable[JournalEntry] = (), remove: Iterable[str] = ()) -> bool:
        """Change the entries in memory only; whether anything changed."""
        changed = False
        for entry in upsert:
            changed |= self.entries.get(entry.uid) != entry
            self.entries[entry.uid] = entry
        for uid in remove:
            changed |= self.entries.pop(uid, None) is not None
        return changed

    async def replace_all(self, entries: Iterable[JournalEntry]) -> None:
        self.entries = {entry.uid: entry for entry in entries}
        await self.flush()

    async def flush(self) -> bool:
        """Write the entries out; a failure (a full disk) is logged, never raised: the
        drafts themselves are safe in the database, only the check at the next start is
        weaker until the next rewrite succeeds."""
        if self.path is None:
            return True
        path = self.path
        async with self._lock:
            data = render(self.entries.values())
            try:
                await asyncio.to_thread(write_atomically, path, data)
            except OSError as exc:
                log.warning("cannot write the session journal %s: %s", path, exc)
                return False
        return True

    async def drain(self) -> None:
        """Wait for the background rewrites started so far."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def parse(text: str) -> list[JournalEntry]:
    """The entries of a journal file's text; ValueError says what is wrong with it."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(document, Mapping) or document.get("version") != JOURNAL_VERSION:
        raise ValueError(f"not a version {JOURNAL_VERSION} session journal")
    items = document.get("sessions")
    if not isinstance(items, list):
        raise ValueError("'sessions' is not a list")
    return [JournalEntry.from_json(item) for item in items]


def render(entries: Iterable[JournalEntry]) -> bytes:
    ordered = sorted(entries, key=lambda e: (e.since, e.uid))
    document = {"version": JOURNAL_VERSION, "sessions": [e.to_json() for e in ordered]}
    return (json.dumps(document, indent=1) + "\n").encode()


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by a file holding `data`, mode 0600, so that a crash at any moment
    leaves either the old file or the new one whole."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # a leftover temporary file keeps its old mode
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
