"""Durable storage of one crdtmds server: a single SQLite file in WAL mode, through aiosqlite.

Storage knows nothing of networking or of the policy model. `Storage` is its interface;
the modules of this package are its parts: the SQLite file and its transactions
(`database`), the stored drafts (`sessions`), loading documents and diagnosing those that
fail (`loading`), Automerge's binary forms (`document_chunk`), and the session journal
beside the database, which lets a start notice drafts the database lost
(`session_journal`).
"""

from crdtmds.storage.database import SCHEMA_VERSION
from crdtmds.storage.loading import LoadedDocuments, LoadProblem
from crdtmds.storage.session_journal import JOURNAL_FILE, JournalEntry, SessionJournal
from crdtmds.storage.sessions import SessionRecord
from crdtmds.storage.store import DEFAULT_COMPACT_THRESHOLD, Storage

__all__ = [
    "DEFAULT_COMPACT_THRESHOLD",
    "JOURNAL_FILE",
    "SCHEMA_VERSION",
    "JournalEntry",
    "LoadProblem",
    "LoadedDocuments",
    "SessionJournal",
    "SessionRecord",
    "Storage",
]
