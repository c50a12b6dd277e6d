"""A domain: the live Automerge document of one customer's or site's policy.

`Domain` owns the live document and keeps its plain-data view (`DomainState`) that every
read is served from. The view is kept, not rebuilt: a publish from this server hands
over the session's view, and changes merged from peers are applied by re-reading only
the entities their patches touch (`crdtmds.core.view_refresh`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from automerge.core import ROOT, Document

from crdtmds.core import model, names
from crdtmds.core.docdata import child_id, has_heads, new_actor, put_value, read
from crdtmds.core.domain_state import DomainState
from crdtmds.core.view_refresh import StateRefresher
from crdtmds.errors import PublishFailed, ValidationError

Change = tuple[bytes, bytes]
"""(hash, bytes) of one Automerge change."""


class Domain:
    """The live document of one domain and its plain-data view."""

    def __init__(self, document_id: str, doc: Document) -> None:
        self.document_id = document_id
        self.doc = doc
        self._state: DomainState | None = None
        self._state_heads: list[bytes] = []
        self._refresher = StateRefresher()
        self.lock = threading.RLock()
        """Held around the view's refresh and any multi-call write of the live document.
        A revert runs in a worker thread (`api/commands/revisions.py`) while the event
        loop serves other calls and gossip: the view must not be refreshed by both at
        once, and a Document inside a transaction refuses every other call."""

    @classmethod
    def create(cls, name: str, document_id: str, actor: bytes | None = None) -> Domain:
        """A new domain with the default access layer, in one change by `actor`. A
        clock-prefixed actor (`new_actor`) by default: later actors, which are made
        later, then sort after it and never renumber the document (see `new_actor`)."""
        name = names.check_name(name, "name")
        doc = Document()
        doc.set_actor(actor or new_actor())
        layer_uid = model.new_uid()
        with doc.transaction() as tx:
            put_value(tx, ROOT, "name", name)
            put_value(tx, ROOT, "objects", {})
            put_value(
                tx,
                ROOT,
                "layers",
                {
                    layer_uid: {
                        "uid": layer_uid,
                        "name": model.DEFAULT_LAYER_NAME,
                        "rules": {},
                        "order": [],
                    }
                },
            )
            put_value(tx, ROOT, "revisions", [])
        return cls(document_id, doc)

    @property
    def name(self) -> str:
        return self.state.name

    def heads(self) -> list[bytes]:
        with self.lock:
            return self.doc.get_heads()

    @property
    def state(self) -> DomainState:
        """The plain-data view at the current heads, brought up to date on demand."""
        with self.lock:
            heads = self.doc.get_heads()
            if self._state is None:
                self._state = DomainState.from_plain(read(self.doc))
                self._refresher.index.seen_heads = heads
            elif heads != self._state_heads:
                self._state = self._refresher.refresh(self.doc, self._state, self._state_heads)
            self._state_heads = heads
            return self._state

    def write(self, actor: bytes, write: Callable[[Any], None]) -> Change:
        """Run `write(tx)` as one change of the live document by `actor`; the document
        keeps its own actor for every other write."""
        with self.lock:
            own = self.doc.get_actor()
            self.doc.set_actor(actor)
            try:
                with self.doc.transaction() as tx:
                    write(tx)
                change = self.doc.get_last_local_change()
            finally:
                self.doc.set_actor(own)
            if change is None or change.actor_id != actor:
                raise PublishFailed("the publish wrote no change")
            return change.hash, change.bytes

    def drop_change(self, change_hash: bytes) -> None:
        """Take back a change this server wrote that could not be made durable (nothing
        was sent: nothing can depend on it). Rebuilds the document from its changes."""
        with self.lock:
            chunks = [c.bytes for c in self.doc.get_changes([]) if c.hash != change_hash]
            actor = self.doc.get_actor()
            self.doc = Document.load(b"".join(chunks)) if chunks else Document()
            self.doc.set_actor(actor)
            self._state = None
            self._refresher = StateRefresher()

    def adopt_or_merge(self, doc: Document, state: DomainState, base_heads: list[bytes]) -> None:
        """Take a durable fork written on `base_heads` (a revert): as the live document
        when nothing else arrived since, else merged into it."""
        with self.lock:
            if sorted(self.doc.get_heads()) == sorted(base_heads):
                self.adopt_document(doc, state)
            else:
                self.doc.merge(doc)

    def adopt_document(self, doc: Document, state: DomainState) -> None:
        """Take `doc`, this document plus changes nobody raced, as the live document. It
        takes the live document's actor: the session that wrote it goes on writing as its
        own actor elsewhere, and two documents must never write as one actor."""
        with self.lock:
            doc.set_actor(self.doc.get_actor())
            self.doc = doc
            self.adopt_state(state)

    def adopt_state(self, state: DomainState) -> None:
        """Take `state` as the view at the current heads (a publish nobody raced)."""
        with self.lock:
            self._state = state
            self._state_heads = self.doc.get_heads()

    def state_at(self, heads: Iterable[bytes]) -> DomainState:
        """The domain as it was at `heads` (a past revision), read in place."""
        return state_at(self.doc, heads)

    def is_domain_document(self) -> bool:
        """Whether the document has the shape of a domain (it may be a fresh, empty copy
        still waiting for its first sync)."""
        return child_id(self.doc, ROOT, "objects") is not None


def state_at(doc: Document, heads: Iterable[bytes]) -> DomainState:
    """The domain in `doc` as it was at `heads`, read in place (many short calls)."""
    heads = list(heads)
    if not has_heads(doc, heads):
        raise ValidationError("unknown heads: the document holds no such changes")
    return DomainState.from_plain(read(doc, ROOT, heads))
