"""A revert: a draft made like a past revision, and written as one change.

A revert reads a whole past state and writes one put per differing field: seconds on a
large domain, so the command layer runs it in a worker thread. The live document cannot
be written there (a Document inside a transaction refuses every call the event loop
makes on it), nor read at length (a publish on the loop would wait on the domain's lock),
so the revert works on a fork of the live document taken when it is asked for: the past
is read from the fork, and at publish the revert, any later edits of the draft and the
revision entry are written to the fork as one change, which the live document adopts
once it is durable (`Domain.adopt_or_merge`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from automerge.core import Document

from crdtmds.core.docdata import (
    ROOT,
    child_id,
    fork_with_actor,
    new_actor,
    read,
    rebuild_at,
    unhex_heads,
)
from crdtmds.core.domain import Domain, state_at
from crdtmds.core.domain_state import DomainState
from crdtmds.core.field_writes import write_layers_like, write_objects_like
from crdtmds.errors import ValidationError


@dataclass(slots=True)
class RevertPlan:
    """A revert to `revision`: the live heads it was planned on, the domain there
    (`before`) and at the revision (`target`), and the fork it is written to."""

    revision: dict[str, Any] | None
    """None for a draft stored as changes (`plan_stored_changes`)."""
    heads: list[bytes]
    before: DomainState
    target: DomainState
    fork: Document | None

    def view(self) -> DomainState:
        """The draft's view: the revision's content, with today's name and revisions."""
        view = self.target.copy()
        view.name, view.revisions = self.before.name, self.before.revisions
        view._shared.add("revisions")
        return view

    def take_fork(self, domain: Domain) -> Document:
        """The fork to write to; taken again (rebuilt at the plan's heads) when a failed
        publish dropped it."""
        fork, self.fork = self.fork, None
        if fork is None:
            with domain.lock:
                fork = rebuild_at(domain.doc, self.heads)
        return fork


def plan_revert(domain: Domain, revision: dict[str, Any]) -> RevertPlan:
    """Read the domain as it was at `revision`, from a fork of the live document."""
    heads = revision.get("heads")
    if not isinstance(heads, list):
        raise ValidationError(f"revision '{revision.get('uid')}' has no content heads")
    with domain.lock:  # one short call on the live document, then the fork is ours
        fork = fork_with_actor(domain.doc, new_actor())
        before = domain.state
    target = state_at(fork, content_heads(fork, unhex_heads(heads), revision.get("uid")))
    return RevertPlan(revision, fork.get_heads(), before, target, fork)


def revision_state(domain: Domain, revision: Mapping[str, Any]) -> DomainState:
    """The domain as the published revision left it, read in place."""
    heads = revision.get("heads")
    if not isinstance(heads, list) or not all(isinstance(h, str) for h in heads):
        raise ValidationError(f"revision '{revision.get('uid')}' has no content heads")
    with domain.lock:
        doc = domain.doc
        return state_at(doc, content_heads(doc, unhex_heads(heads), revision.get("uid")))


def plan_stored_changes(domain: Domain, heads: list[bytes], chunks: Sequence[bytes]) -> RevertPlan:
    """A draft stored by an earlier version of crdtmds, as the Automerge changes of its
    fork on `heads`: written like a revert, from the domain at `heads` to what the
    changes make of it (their net effect, field by field)."""
    with domain.lock:
        fork = rebuild_at(domain.doc, heads)
        drafted = rebuild_at(domain.doc, heads, chunks)
    before = DomainState.from_plain(read(fork))
    return RevertPlan(None, list(heads), before, DomainState.from_plain(read(drafted)), fork)


def is_change_chunk(data: bytes) -> bool:
    """Whether a stored draft row is an Automerge change (the earlier form of drafts)."""
    return data[:4] == AUTOMERGE_MAGIC


AUTOMERGE_MAGIC = bytes.fromhex("856f4a83")


def write_revert(tx: Any, plan: RevertPlan) -> None:
    """Make the document, which holds `plan.before`, hold the target's content."""
    objects = child_id(tx, ROOT, "objects")
    layers = child_id(tx, ROOT, "layers")
    if objects is None or layers is None:
        raise ValidationError("the domain document has no object map or no layers")
    write_objects_like(tx, objects, plan.before, plan.target)
    write_layers_like(tx, layers, plan.before, plan.target)


def content_heads(doc: Document, heads: Sequence[bytes], uid: Any) -> list[bytes]:
    """The heads whose content is that of the revision `uid`, written on `heads`.

    A publish writes its edits and its revision entry as one change on the heads its
    entry names: the content is that change's. Entries written before that design name
    the heads of their edits, with the entry in a change of its own after them; reading
    at that change gives the same content.
    """
    heads = list(heads)
    wanted = sorted(heads)
    revisions = child_id(doc, ROOT, "revisions")
    for change in doc.get_changes(heads):
        if sorted(change.deps) == wanted and _carries(doc, revisions, change.hash, uid):
            return [change.hash]
    return heads


def _carries(doc: Document, revisions: bytes | None, at: bytes, uid: Any) -> bool:
    """Whether the change `at` appended the revision entry `uid` (the last entry there)."""
    if revisions is None:
        return False
    length = doc.length(revisions, [at])
    got = doc.get(revisions, length - 1, [at]) if length else None
    found = doc.get(got[1], "uid", [at]) if got is not None else None
    return found is not None and found[0][1] == uid
