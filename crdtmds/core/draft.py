"""The content of an administrator's draft: its validated edits, kept as commands, and the
plain-data view they give.

A `Draft` holds the live heads and domain state it started from (its base), the edits
(`crdtmds.core.edits.Edit`, pinned, so that they can be stored and run again), the writes
they make, and its view (the base plus its edits, a copy-on-write copy of the base). No
document is forked and nothing is written while the draft is edited: a publish writes the
edits and the revision entry as one change of the live document (`publish`). When others
published since the base, the edits are first run again on the live view (a rebase),
with the same checks; any that fail refuse the publish (`PublishConflict`) and the draft
is kept. A revert (`crdtmds.core.revert`) is the one edit written elsewhere: to a fork
taken when it was asked for, in a worker thread, then adopted by the live document.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from automerge.core import Document

from crdtmds.core.docdata import ROOT, child_id, insert_value
from crdtmds.core.domain import Change, Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.edits import DocWriter, Edit, Write, run_edit
from crdtmds.core.revert import (
    RevertPlan,
    is_change_chunk,
    plan_revert,
    plan_stored_changes,
    write_revert,
)
from crdtmds.core.session_diff import Touched, draft_changes
from crdtmds.errors import CrdtmdsError, PublishFailed, ValidationError

MakeRevision = Callable[[list[bytes], int], dict[str, Any]]
"""The revision entry of a publish written on the given heads with so many changes."""
PastRevision = Callable[[str], "tuple[dict[str, Any], DomainState] | None"]
"""A revision the draft's document does not list (one of an earlier epoch, see
`crdtmds.core.epochs`) by uid: its entry and the domain as it left it; None if unknown."""


class PublishConflict(ValidationError):
    """Edits of a draft that no longer apply to the live domain (others published since
    its base); `details["conflicts"]` lists each with the reason."""


@dataclass(slots=True)
class Published:
    """A publish written as one change, not yet durable: `fork` is the document to adopt
    once it is (a revert), None when the change is in the live document already."""

    revision: dict[str, Any]
    change: Change
    state: DomainState
    heads_before: list[bytes]
    fork: Document | None = None


class Draft:
    """A draft of a domain: base, edits and view. Construct with `open` or `restore`."""

    def __init__(self, domain: Domain, base_heads: list[bytes], base: DomainState) -> None:
        self.domain = domain
        self._base_heads = base_heads
        self._base = base
        self._view: DomainState | None = None
        self.edits: list[Edit] = []
        self._writes: list[Write] = []
        self._unsaved: list[Edit] = []
        self.touched = Touched()
        """What the draft changed since its base (read by show-changes)."""
        self.revert: RevertPlan | None = None
        self.last_write: float | None = None
        """When the draft last took an edit (the session's last activity)."""

    @classmethod
    def open(cls, domain: Domain) -> Draft:
        """An empty draft of the live domain."""
        return cls(domain, domain.heads(), domain.state)

    @classmethod
    def restore(
        cls,
        domain: Domain,
        *,
        base_heads: list[bytes],
        stored: Sequence[bytes],
        past: PastRevision | None = None,
    ) -> Draft:
        """A draft rebuilt after a restart: its edits run again on its base. A draft
        stored by an earlier version, as the changes of a fork, leads with those."""
        changes = [data for data in stored if is_change_chunk(data)]
        edits = [Edit.from_bytes(data) for data in stored if not is_change_chunk(data)]
        if changes:
            plan = plan_stored_changes(domain, list(base_heads), changes)
            draft = cls(domain, plan.heads, plan.before)
            draft._take_plan(plan)
        else:
            at_live = sorted(base_heads) == sorted(domain.heads())
            base = domain.state if at_live else domain.state_at(base_heads)
            draft = cls(domain, list(base_heads), base)
            draft._view = base.copy()
        for edit in edits:
            if edit.kind == "revert":
                draft.revert_to(edit.params["revision"], past)
            else:
                draft._take(edit)
        draft._unsaved = []
        return draft

    # ------------------------------------------------------------ base and view

    @property
    def base_heads(self) -> list[bytes]:
        """Heads of the live document the draft started from."""
        self._follow_live()
        return self._base_heads

    @property
    def base(self) -> DomainState:
        """The domain as the draft started from it."""
        self._follow_live()
        return self._base

    @property
    def view(self) -> DomainState:
        """The domain as the draft has it (the base plus the draft's edits)."""
        self._follow_live()
        if self._view is None:
            self._view = self._base.copy()
        return self._view

    def _follow_live(self) -> None:
        """An empty draft starts from the live domain as it is now: publishes may have
        landed since it was last read."""
        if not self.edits and self.revert is None and self._base_heads != self.domain.heads():
            self._base_heads = self.domain.heads()
            self._base = self.domain.state
            self._view = None

    def ready_to_edit(self) -> None:
        self._follow_live()

    def has_changes(self) -> bool:
        return bool(self.edits) or self.revert is not None

    def changes(self) -> dict[str, list[dict[str, Any]]]:
        return draft_changes(self.base, self.view, self.touched)

    # ------------------------------------------------------------ edits

    def run(self, edit: Edit) -> dict[str, Any]:
        """Validate `edit` against the view and take it; returns the command's reply."""
        self._follow_live()
        outcome = run_edit(self.view, edit)
        if outcome.write is not None:
            self.edits.append(outcome.pinned)
            self._writes.append(outcome.write)
            self._unsaved.append(outcome.pinned)
            _merge_touched(self.touched, outcome.touched)
            self.last_write = time.time()
        return outcome.result

    def _take(self, edit: Edit) -> None:
        assert self._view is not None  # taken while restoring: never follows the live domain
        outcome = run_edit(self._view, edit)
        if outcome.write is not None:
            self.edits.append(outcome.pinned)
            self._writes.append(outcome.write)
            _merge_touched(self.touched, outcome.touched)

    def take_unsaved(self) -> list[bytes]:
        """Edits taken since the last call, stored form: persist them to keep the draft."""
        unsaved, self._unsaved = self._unsaved, []
        return [edit.to_bytes() for edit in unsaved]

    def return_unsaved(self, edits: list[bytes]) -> None:
        """Give back what `take_unsaved` returned when persisting it failed."""
        self._unsaved[:0] = [Edit.from_bytes(data) for data in edits]

    @property
    def stored_edits(self) -> list[bytes]:
        return [edit.to_bytes() for edit in self.edits]

    # ------------------------------------------------------------ revert

    def revert_to(self, revision_uid: str, past: PastRevision | None = None) -> dict[str, Any]:
        """Make the view that of a past revision (see `crdtmds.core.revert`). Reads the
        past on a fork of its own: safe in a worker thread. A revision this document
        does not list is asked of `past`, which reads it elsewhere (and not here: the
        earlier epoch's document is the event loop's)."""
        if self.edits:
            raise ValidationError("publish or discard the draft's edits before a revert")
        self._follow_live()
        listed = next((r for r in self.view.revisions if r.get("uid") == revision_uid), None)
        earlier = past(revision_uid) if listed is None and past is not None else None
        if listed is not None:
            plan = plan_revert(self.domain, listed)
        elif earlier is not None:
            plan = plan_revert(self.domain, earlier[0], earlier[1])
        else:
            plan = plan_revert(self.domain, self.view.revision(revision_uid))  # not found
        self._take_plan(plan)
        self._unsaved = [Edit("revert", {"revision": revision_uid})]
        self.last_write = time.time()
        assert plan.revision is not None
        return plan.revision

    def _take_plan(self, plan: RevertPlan) -> None:
        self.revert = plan
        self._base_heads, self._base = plan.heads, plan.before
        self._view = plan.view()
        touched = Touched()
        _touch_all(touched, (self._base, self._view))
        self.touched = touched

    # ------------------------------------------------------------ publish

    def publish(self, actor: bytes, make_revision: MakeRevision) -> Published:
        """Write the draft and its revision entry, `make_revision(heads, changes)`, as one
        change by `actor`: to the live document (rebased first if others published since
        the base), or, for a revert, to its fork. The draft is kept until `empty`."""
        if self.revert is not None:
            return self._publish_revert(actor, make_revision)
        domain = self.domain
        with domain.lock:  # a revert's worker thread may be reading the live document
            live = domain.heads()
            if sorted(live) == sorted(self.base_heads):
                base, state, writes = self.base, self.view, self._writes
                touched = self.touched
            else:
                base = domain.state
                state, writes, touched = self._rebased(base)
            revision = make_revision(live, _count(base, state, touched))

            def write(tx: Any) -> None:
                doc = DocWriter(tx)
                for each in writes:
                    each(doc)
                _append_revision(tx, revision)

            change = domain.write(actor, write)
            # A copy (copy on write: cheap) for the live domain, so that the draft stays
            # whole should the publish fail to become durable.
            state = state.copy()
            state.append_revision(revision)
            domain.adopt_state(state)
        return Published(revision, change, state, live)

    def _rebased(self, live: DomainState) -> tuple[DomainState, list[Write], Touched]:
        """The edits run again on the live view; `PublishConflict` lists those refused."""
        state = live.copy()
        writes: list[Write] = []
        touched = Touched()
        conflicts: list[dict[str, Any]] = []
        for edit in self.edits:
            try:
                outcome = run_edit(state, edit)
            except CrdtmdsError as exc:  # a record deleted meanwhile, a name taken, ...
                conflicts.append({**edit.describe(), "reason": str(exc)})
                continue
            if outcome.write is not None:
                writes.append(outcome.write)
                _merge_touched(touched, outcome.touched)
        if conflicts:
            raise PublishConflict(
                f"{len(conflicts)} edit(s) of the draft conflict with what was published "
                "since it started: change or discard them, then publish again",
                details={"conflicts": conflicts},
            )
        return state, writes, touched

    def _publish_revert(self, actor: bytes, make_revision: MakeRevision) -> Published:
        plan = self.revert
        assert plan is not None
        revision = make_revision(plan.heads, _count(self.base, self.view, self.touched))
        writes = self._writes

        def write(tx: Any) -> None:
            write_revert(tx, plan)
            doc = DocWriter(tx)
            for each in writes:
                each(doc)
            _append_revision(tx, revision)

        fork = plan.take_fork(self.domain)
        fork.set_actor(actor)
        with fork.transaction() as tx:
            write(tx)
        last = fork.get_last_local_change()
        if last is None:
            raise PublishFailed("the revert wrote no change")
        state = self.view.copy()
        state.append_revision(revision)
        return Published(revision, (last.hash, last.bytes), state, plan.heads, fork)

    def empty(self) -> None:
        """Start again, empty, from the live domain (after a publish or a discard)."""
        self.edits, self._writes, self._unsaved = [], [], []
        self.touched = Touched()
        self.revert = None
        self._base_heads = self.domain.heads()
        self._base = self.domain.state
        self._view = None

    def touch_everything(self) -> None:
        _touch_all(self.touched, (self.base, self.view))


def _append_revision(tx: Any, revision: dict[str, Any]) -> None:
    revisions = child_id(tx, ROOT, "revisions")
    if revisions is None:
        raise PublishFailed("the domain document has no revision list")
    insert_value(tx, revisions, tx.length(revisions), revision)


def _count(base: DomainState, state: DomainState, touched: Touched) -> int:
    changes = draft_changes(base, state, touched)
    return sum(len(v) for v in changes.values())


def _merge_touched(into: Touched, new: Touched) -> None:
    into.objects |= new.objects
    into.rules |= new.rules
    into.orders |= new.orders


def _touch_all(touched: Touched, states: Sequence[DomainState]) -> None:
    for state in states:
        touched.objects.update(state.objects)
        for layer in state.layers.values():
            touched.rules.update((layer.uid, uid) for uid in layer.rules)
            touched.orders.add(layer.uid)
