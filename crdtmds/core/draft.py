"""The document side of an administrator's draft: its fork of the domain document.

A `Draft` holds the fork (taken lazily from the live document), the heads and domain
state it started from, its view (the base plus its edits, kept in step with the fork),
the changes it wrote and which of them are not yet saved, and a publish in progress. It
writes each edit as one Automerge change and knows how to fold itself into the live
document. What an edit means, and the publish protocol, belong to `Session`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from automerge.core import ROOT, Document

from crdtmds.core.docdata import (
    child_id,
    fork_with_actor,
    insert_value,
    new_actor,
    read,
    rebuild_at,
)
from crdtmds.core.domain import Domain, state_at
from crdtmds.core.domain_state import DomainState, Layer
from crdtmds.core.session_diff import Touched
from crdtmds.core.view_refresh import refresh_state
from crdtmds.errors import ObjectNotFound, PublishFailed, ValidationError

Change = tuple[bytes, bytes]
"""(hash, bytes) of one Automerge change."""


@dataclass(slots=True)
class PendingPublish:
    """A publish whose revision entry is written to the fork but not yet merged."""

    revision: dict[str, Any]
    changes: list[Change]
    heads_before_revision: list[bytes]


class Draft:
    """A fork of a domain document and what it changed. Construct with `Draft.open` or
    `Draft.restore`."""

    def __init__(
        self,
        *,
        domain: Domain,
        fork: Document,
        base_heads: list[bytes],
        base: DomainState,
        view: DomainState,
        own_changes: list[Change] | None = None,
    ) -> None:
        self.domain = domain
        self._fork: Document | None = fork
        """The draft's document; None until the next use after a publish (see `fork`)."""
        self._actor = fork.get_actor()
        self._bound = True
        """False for an empty draft not yet tied to live heads (see `_bind`)."""
        self._base_heads = base_heads
        self._base = base
        self._view = view
        self._own_changes: list[Change] = list(own_changes or [])
        self._unsaved: list[bytes] = []
        self.touched = Touched()
        """What the draft changed since its base (read by show-changes)."""
        self.pending: PendingPublish | None = None
        self.last_write: float | None = None
        """When `commit` last ran a write (the session's last activity)."""
        if own_changes:
            self.touch_everything()

    @classmethod
    def open(cls, domain: Domain) -> Draft:
        """An empty draft of the live document, with a new actor."""
        base = domain.state
        return cls(
            domain=domain,
            fork=fork_with_actor(domain.doc, new_actor()),
            base_heads=domain.heads(),
            base=base,
            view=base.copy(),
        )

    @classmethod
    def restore(
        cls, domain: Domain, *, base_heads: list[bytes], actor: bytes, changes: list[bytes]
    ) -> Draft:
        """A draft rebuilt after a restart from its base heads and its own changes."""
        fork = rebuild_at(domain.doc, base_heads, changes, actor)
        own = [(c.hash, c.bytes) for c in fork.get_changes(base_heads)]
        # Full reads are slow on a large domain: start from the live view when the draft
        # is based on the current heads, and get the draft's view by applying its own
        # changes to the base rather than by reading the whole fork.
        at_live = sorted(base_heads) == sorted(domain.heads())
        base = domain.state if at_live else domain.state_at(base_heads)
        return cls(
            domain=domain,
            fork=fork,
            base_heads=base_heads,
            base=base,
            view=refresh_state(fork, base, base_heads),
            own_changes=own,
        )

    # ------------------------------------------------------------ the fork and its base

    @property
    def actor(self) -> bytes:
        return self._actor

    @property
    def fork(self) -> Document:
        """The draft's document. After a publish it is forked from the live document only
        when next used: forking costs milliseconds on a large domain, and other publishes
        often arrive before an administrator's next edit, which then starts the empty
        draft from the live heads anyway (see `Node.start_from_live`)."""
        if self._fork is None:
            with self.domain.lock:  # may run in a worker thread (a revert)
                live = self.domain.doc
                if live.get_heads() == self.base_heads:
                    self._fork = fork_with_actor(live, self._actor)
                else:
                    # Not reached through the edits, which rebase an empty draft first
                    # (`ready_to_edit`); rebuilt from the changes, never with `fork_at`.
                    self._fork = rebuild_at(live, self.base_heads, actor=self._actor)
        return self._fork

    def ready_to_edit(self) -> None:
        """Before an edit reads the view: an empty draft whose document is not forked yet
        starts from the live document as it is now, so that the view the edit reads and
        the fork it writes hold the same heads (publishes may have landed since the view
        was last read)."""
        if not self._bound or (
            self._fork is None and not self._own_changes and self.domain.heads() != self._base_heads
        ):
            self._bind()

    def _bind(self) -> None:
        """Start the empty draft from the live document as it is now. Done when the draft
        is next used, not when it empties: other publishes arriving meanwhile would make
        the domain's view be brought up to date twice."""
        self._bound = True
        self._base_heads = self.domain.heads()
        self._base = self.domain.state
        self._view = self._base.copy()
        # A fork still at the live heads is kept; otherwise a fresh fork (same actor, so
        # the draft's sequence numbers go on), taken when next used, costs far less than
        # merging into the old one whatever the live document gained.
        if self._fork is not None and self._fork.get_heads() != self._base_heads:
            self._fork = None

    @property
    def base_heads(self) -> list[bytes]:
        """Heads of the live document the draft started from."""
        if not self._bound:
            self._bind()
        return self._base_heads

    @property
    def base(self) -> DomainState:
        """The domain as the draft started from it."""
        if not self._bound:
            self._bind()
        return self._base

    @property
    def view(self) -> DomainState:
        """The domain as the draft has it (the base plus the draft's edits)."""
        if not self._bound:
            self._bind()
        return self._view

    def reread_view(self) -> None:
        """Read the view afresh from the fork, after writes too broad to follow one by one;
        everything counts as touched."""
        view = DomainState.from_plain(read(self.fork))
        # Built aside and swapped in whole: a revert runs this in a worker thread, and a
        # read of the session on the event loop must never see a half-filled view or set.
        touched = Touched(set(self.touched.objects), set(self.touched.rules),
                          set(self.touched.orders))  # fmt: skip
        _touch_all(touched, (self.base, view))
        self._view, self.touched = view, touched

    def state_at(self, heads: Sequence[bytes]) -> DomainState:
        """The domain at `heads` (a past revision), read from the draft's own document:
        a worker thread may read it at length while the live document goes on changing
        on the event loop (the fork holds every change up to its base heads)."""
        return state_at(self.fork, heads)

    def touch_everything(self) -> None:
        _touch_all(self.touched, (self.base, self.view))

    # ------------------------------------------------------------ own changes

    @property
    def own_change_bytes(self) -> list[bytes]:
        return [data for _, data in self._own_changes]

    def take_unsaved_changes(self) -> list[bytes]:
        """Change chunks written since the last call: persist them to keep the draft."""
        unsaved, self._unsaved = self._unsaved, []
        return unsaved

    def return_unsaved_changes(self, changes: list[bytes]) -> None:
        """Give back what `take_unsaved_changes` returned when persisting it failed: it is
        handed out again, first, by the next call (later changes depend on it)."""
        self._unsaved[:0] = changes

    def has_changes(self) -> bool:
        return bool(self._own_changes)

    # ------------------------------------------------------------ writing the fork

    def commit(self, write: Any, *, draft: bool = True) -> None:
        """Run `write(tx)` as one change of the fork and remember that change.

        A `draft` change is also handed out by `take_unsaved_changes`; the revision entry
        is not, since it only ever reaches storage as part of a publish.
        """
        if self.pending is not None:
            raise PublishFailed("a publish of this session is in progress")
        heads_before = self.fork.get_heads()
        with self.fork.transaction() as tx:
            write(tx)
        # A transaction that wrote nothing makes no change; the last local change is then
        # an older one, already remembered.
        if self.fork.get_heads() != heads_before:
            change = self.fork.get_last_local_change()
            if change is not None:
                self._own_changes.append((change.hash, change.bytes))
                if draft:
                    self._unsaved.append(change.bytes)
        self.last_write = time.time()

    def objects_id(self) -> bytes:
        objects = child_id(self.fork, ROOT, "objects")
        if objects is None:
            raise ValidationError("the domain document has no object map")
        return objects

    def object_id(self, uid: str) -> bytes:
        obj = child_id(self.fork, self.objects_id(), uid)
        if obj is None:
            raise ObjectNotFound(f"object '{uid}' not found")
        return obj

    def layers_id(self) -> bytes:
        layers = child_id(self.fork, ROOT, "layers")
        if layers is None:
            raise ValidationError("the domain document has no layers")
        return layers

    def layer_ids(self, layer_uid: str) -> tuple[bytes, bytes]:
        """Ids of the rule map and the order list of layer `layer_uid`."""
        layers = child_id(self.fork, ROOT, "layers")
        layer = child_id(self.fork, layers, layer_uid) if layers else None
        rules = child_id(self.fork, layer, "rules") if layer else None
        order = child_id(self.fork, layer, "order") if layer else None
        if rules is None or order is None:
            raise ObjectNotFound(f"access layer '{layer_uid}' not found")
        return rules, order

    def rule_id(self, layer_uid: str, rule_uid: str) -> bytes:
        rule = child_id(self.fork, self.layer_ids(layer_uid)[0], rule_uid)
        if rule is None:
            raise ObjectNotFound(f"access rule '{rule_uid}' not found")
        return rule

    def move_in_order(self, layer: Layer, uid: str, target: int) -> None:
        """Move rule or section `uid` to index `target` of the layer's order list without it."""
        indices = layer.indices_of(uid)
        _, order_id = self.layer_ids(layer.uid)

        def write(tx: Any) -> None:
            for index in reversed(indices):
                tx.delete(order_id, index)
            insert_value(tx, order_id, target, uid)

        self.commit(write)
        layer.move_rule(uid, target)
        # Only moves (and reverts) change the relative order of rules; adds and deletes
        # do not, so only these layers need the order comparison of show-changes.
        self.touched.orders.add(layer.uid)

    # ------------------------------------------------------------ publish and after

    def write_revision(
        self, make_revision: Callable[[list[bytes]], dict[str, Any]]
    ) -> PendingPublish:
        """Write to the fork the revision entry `make_revision(heads)` returns for the heads
        the live document will have once the draft is merged, and hold it as pending."""
        heads_before = self.fork.get_heads()
        revision = make_revision(_merged_heads(heads_before, self.base_heads, self.domain.heads()))
        revisions = child_id(self.fork, ROOT, "revisions")
        if revisions is None:
            raise PublishFailed("the domain document has no revision list")
        index = self.fork.length(revisions)
        self.commit(lambda tx: insert_value(tx, revisions, index, revision), draft=False)
        self.view.revisions.append(revision)
        self.pending = PendingPublish(revision, list(self._own_changes), heads_before)
        return self.pending

    def abort_publish(self) -> None:
        """Take the pending revision entry out of the fork again."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        self._fork = rebuild_at(self.fork, pending.heads_before_revision, actor=self._actor)
        self._own_changes = self._own_changes[:-1]
        self.view.revisions.pop()

    def merge_into_live(self) -> None:
        """Bring the fork's changes into the live document."""
        live = self.domain
        if live.heads() == self.base_heads:
            # Nobody raced the draft: the fork is the live document plus the draft, so it
            # becomes the live document (a merge costs milliseconds on a large document)
            # and the session goes on in a fork of it, taken when next used.
            live.adopt_document(self.fork, self.view)
            self._fork = None
        else:
            live.doc.merge(self.fork)

    def drop(self) -> None:
        """Forget the draft's changes; it starts again from the live document."""
        if self._own_changes:
            # A new actor: the dropped changes' sequence numbers stay taken by the old one.
            self._actor = new_actor()
            self._fork = None
        self.empty()

    def empty(self) -> None:
        # The live document holds everything the fork had (it was just published or
        # dropped): the draft is empty, and starts from the live document when next used.
        self._bound = False
        self._own_changes = []
        self._unsaved = []
        self.touched = Touched()
        self.pending = None


def _touch_all(touched: Touched, states: Sequence[DomainState]) -> None:
    for state in states:
        touched.objects.update(state.objects)
        for layer in state.layers.values():
            touched.rules.update((layer.uid, uid) for uid in layer.rules)
            touched.orders.add(layer.uid)


def _merged_heads(
    draft: Sequence[bytes], base: Sequence[bytes], live: Sequence[bytes]
) -> list[bytes]:
    """Heads of the live document once the draft is merged into it: what a revision of
    the publish must read, so that it shows (and a revert restores) the publishes that
    landed while the draft was open, not the draft alone.

    The draft and the live document both descend from `base`. A base head stays a head
    only where neither side built on it; every other head of either side stays.
    """
    base_set, draft_set, live_set = set(base), set(draft), set(live)
    kept = (draft_set - base_set) | (live_set - base_set) | (base_set & draft_set & live_set)
    return sorted(kept)
