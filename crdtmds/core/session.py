"""An administrator's session: a private draft of one domain.

A session is a fork of the domain document taken when it opens. Every edit is validated
against the session's own view of the domain (so names are unique as the session sees
them), then written to the fork as one Automerge change. Nobody else sees the fork.
Publishing hands the fork's own changes to the caller to persist, then brings them into
the live document: the fork becomes the live document when nobody published since it
was taken, else it is merged. Discarding drops the fork. An emptied draft starts again
from the live document when next used.

This class does no I/O: the caller persists `take_unsaved_changes()` after each edit and
the changes returned by `prepare_publish()` before `complete_publish()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from automerge.core import ROOT, Document

from crdtmds.core import model, names, sections
from crdtmds.core.docdata import (
    child_id,
    fork_with_actor,
    hex_heads,
    insert_value,
    new_actor,
    put_value,
    read,
    rebuild_at,
    unhex_heads,
)
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState, Layer
from crdtmds.core.field_writes import put_changed_fields, write_layers_like, write_objects_like
from crdtmds.core.session_diff import Touched, draft_changes
from crdtmds.core.view_refresh import refresh_state
from crdtmds.errors import (
    InvalidParameter,
    NameInUse,
    ObjectInUse,
    ObjectNotFound,
    PublishFailed,
    ValidationError,
)

Change = tuple[bytes, bytes]
"""(hash, bytes) of one Automerge change."""


@dataclass(slots=True)
class PendingPublish:
    """A publish whose revision entry is written to the fork but not yet merged."""

    revision: dict[str, Any]
    changes: list[Change]
    heads_before_revision: list[bytes]


class Session:
    """A private draft of a domain. Construct with `Session.open` or `Session.restore`."""

    def __init__(
        self,
        *,
        uid: str,
        domain: Domain,
        admin: str,
        server: str,
        fork: Document,
        base_heads: list[bytes],
        base: DomainState,
        view: DomainState,
        name: str = "",
        description: str = "",
        created_at: float | None = None,
        own_changes: list[Change] | None = None,
    ) -> None:
        self.uid = uid
        self.domain = domain
        self.admin = admin
        self.server = server
        self.name = name
        self.description = description
        self.created_at = created_at if created_at is not None else time.time()
        self.last_active = self.created_at
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
        self._touched = Touched()
        self._pending: PendingPublish | None = None
        if own_changes:
            self._touch_everything()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        domain: Domain,
        *,
        admin: str,
        server: str,
        name: str = "",
        description: str = "",
        uid: str | None = None,
    ) -> Session:
        names.check_label(name, "session-name")  # `restore` skips it: old names still load
        base = domain.state
        return cls(
            uid=uid or model.new_uid(),
            domain=domain,
            admin=admin,
            server=server,
            fork=fork_with_actor(domain.doc, new_actor()),
            base_heads=domain.heads(),
            base=base,
            view=base.copy(),
            name=name,
            description=description,
        )

    @classmethod
    def restore(
        cls,
        domain: Domain,
        *,
        uid: str,
        admin: str,
        server: str,
        base_heads: list[bytes],
        actor: bytes,
        changes: list[bytes],
        name: str = "",
        description: str = "",
        created_at: float | None = None,
    ) -> Session:
        """A session rebuilt after a restart from its base heads and its own changes."""
        fork = rebuild_at(domain.doc, base_heads, changes, actor)
        own = [(c.hash, c.bytes) for c in fork.get_changes(base_heads)]
        # Full reads are slow on a large domain: start from the live view when the draft
        # is based on the current heads, and get the draft's view by applying its own
        # changes to the base rather than by reading the whole fork.
        at_live = sorted(base_heads) == sorted(domain.heads())
        base = domain.state if at_live else domain.state_at(base_heads)
        return cls(
            uid=uid,
            domain=domain,
            admin=admin,
            server=server,
            fork=fork,
            base_heads=base_heads,
            base=base,
            view=refresh_state(fork, base, base_heads),
            name=name,
            description=description,
            created_at=created_at,
            own_changes=own,
        )

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
            live = self.domain.doc
            if live.get_heads() == self.base_heads:
                self._fork = fork_with_actor(live, self._actor)
            else:
                # Not reached through the edits, which rebase an empty draft first
                # (`_ready_to_edit`); rebuilt from the changes, never with `fork_at`.
                self._fork = rebuild_at(live, self.base_heads, actor=self._actor)
        return self._fork

    def _ready_to_edit(self) -> None:
        """Before an edit reads the view: an empty draft whose document is not forked yet
        starts from the live document as it is now, so that the view the edit reads and
        the fork it writes hold the same heads (publishes may have landed since the view
        was last read)."""
        if not self._bound or (
            self._fork is None and not self._own_changes and self.domain.heads() != self._base_heads
        ):
            self._bind()

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

    # ------------------------------------------------------------ objects

    def add_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._ready_to_edit()
        record = model.build_object(obj_type, params, self.view.find_object)
        self._check_name_free(record["name"], record["uid"])
        objects = self._objects_id()
        self._commit(lambda tx: put_value(tx, objects, record["uid"], record))
        self.view.put_object(record["uid"], record)
        self._touched.objects.add(record["uid"])
        return record

    def set_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._ready_to_edit()
        current = self.view.get_object(_object_ref(params), obj_type)
        record = model.build_object(obj_type, params, self.view.find_object, existing=current)
        if record["name"] != current["name"]:
            self._check_name_free(record["name"], record["uid"])
        if record != current:
            self._write_fields(self._object_id(current["uid"]), current, record)
            self.view.put_object(record["uid"], record)
            self._touched.objects.add(record["uid"])
        return record

    def delete_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._ready_to_edit()
        record = self.view.get_object(_object_ref(params), obj_type)
        uses = self.view.where_used(record["uid"])
        if uses:
            raise ObjectInUse(
                f"{obj_type} '{record['name']}' is still used by {len(uses)} rule(s) or group(s)",
                details={"where-used": uses},
            )
        objects = self._objects_id()
        self._commit(lambda tx: tx.delete(objects, record["uid"]))
        self.view.remove_object(record["uid"])
        self._touched.objects.add(record["uid"])
        return record

    def _check_name_free(self, name: str, uid: str) -> None:
        holders = [u for u in self.view.names.get(name, ()) if u != uid]
        if holders:
            raise NameInUse(
                f"the name '{name}' is already in use",
                details={"name": name, "uid": holders[0]},
            )

    # ------------------------------------------------------------ rules

    def add_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        position = model.check_position(params.get("position", "top"))
        rule = model.build_rule(params, self.view.find_object)
        index = self._raw_index(layer, position)
        rules_id, order_id = self._layer_ids(layer.uid)

        def write(tx: Any) -> None:
            put_value(tx, rules_id, rule["uid"], rule)
            insert_value(tx, order_id, index, rule["uid"])

        self._commit(write)
        layer.insert_rule(rule, index)
        self._touched.rules.add((layer.uid, rule["uid"]))
        return self._numbered(layer, rule)

    def set_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        current = self.view.get_rule(layer, _rule_ref(params))
        rule = model.build_rule(params, self.view.find_object, existing=current)
        # Resolve the move before writing anything, so a bad position rejects the whole edit.
        target = None
        if "new-position" in params:
            position = model.check_position(params["new-position"], "new-position")
            target = self._raw_index(layer, position, moving=rule["uid"])
        if rule != current:
            rule_id = child_id(self.fork, self._layer_ids(layer.uid)[0], rule["uid"])
            if rule_id is None:
                raise ObjectNotFound(f"access rule '{rule['uid']}' not found")
            self._write_fields(rule_id, current, rule)
            layer.replace_rule(rule)
            self._touched.rules.add((layer.uid, rule["uid"]))
        if target is not None:
            self._move_rule(layer, rule["uid"], target)
        return self._numbered(layer, layer.rules[rule["uid"]])

    def delete_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        rule = self.view.get_rule(layer, _rule_ref(params))
        rules_id, order_id = self._layer_ids(layer.uid)
        indices = _indices_of(layer.order, rule["uid"])

        def write(tx: Any) -> None:
            tx.delete(rules_id, rule["uid"])
            for index in reversed(indices):
                tx.delete(order_id, index)

        self._commit(write)
        layer.remove_rule(rule["uid"])
        self._touched.rules.add((layer.uid, rule["uid"]))
        return rule

    def _move_rule(self, layer: Layer, uid: str, target: int) -> None:
        """Move rule `uid` to index `target` of the order list without it."""
        indices = _indices_of(layer.order, uid)
        _, order_id = self._layer_ids(layer.uid)

        def write(tx: Any) -> None:
            for index in reversed(indices):
                tx.delete(order_id, index)
            insert_value(tx, order_id, target, uid)

        self._commit(write)
        layer.move_rule(uid, target)
        # Only moves (and reverts) change the relative order of rules; adds and deletes
        # do not, so only these layers need the order comparison of show-changes.
        self._touched.orders.add(layer.uid)

    def _raw_index(self, layer: Layer, position: Any, *, moving: str | None = None) -> int:
        """Index in the stored order list for a position given against the visible order
        (see `crdtmds.core.sections.raw_index`: rules and sections are anchors)."""
        return sections.raw_index(layer, position, self.view.get_rule, moving=moving)

    def _numbered(self, layer: Layer, rule: dict[str, Any]) -> dict[str, Any]:
        number = layer.number_of(rule["uid"])
        return {**rule, "type": "access-rule", "layer": layer.uid, "rule-number": number}

    # ------------------------------------------------------------ sections

    def add_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A new access section (a marker in the layer's order, its record in the layer's
        rules map; see `crdtmds.core.sections`)."""
        self._ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        position = model.check_position(params.get("position", "top"))
        section = sections.build_section(params)
        index = self._raw_index(layer, position)
        rules_id, order_id = self._layer_ids(layer.uid)

        def write(tx: Any) -> None:
            put_value(tx, rules_id, section["uid"], section)
            insert_value(tx, order_id, index, section["uid"])

        self._commit(write)
        layer.put_section(section)
        layer.insert_marker(section["uid"], index)
        self._touched.rules.add((layer.uid, section["uid"]))
        return section

    def set_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Rename a section (`new-name`) and/or move it (`new-position`)."""
        self._ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        current = sections.find_section(layer, _object_ref(params))
        section = sections.build_section(params, current)
        target = None
        if "new-position" in params:
            position = model.check_position(params["new-position"], "new-position")
            target = self._raw_index(layer, position, moving=section["uid"])
        if section != current:
            record_id = child_id(self.fork, self._layer_ids(layer.uid)[0], section["uid"])
            if record_id is None:
                raise ObjectNotFound(f"access section '{section['uid']}' not found")
            self._write_fields(record_id, current, section)
            layer.put_section(section)
            self._touched.rules.add((layer.uid, section["uid"]))
        if target is not None:
            self._move_rule(layer, section["uid"], target)
        return section

    def delete_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Delete a section; its rules stay where they are (in the section before it)."""
        self._ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        section = sections.find_section(layer, _object_ref(params))
        rules_id, order_id = self._layer_ids(layer.uid)
        indices = _indices_of(layer.order, section["uid"])

        def write(tx: Any) -> None:
            tx.delete(rules_id, section["uid"])
            for index in reversed(indices):
                tx.delete(order_id, index)

        self._commit(write)
        layer.remove_section(section["uid"])
        self._touched.rules.add((layer.uid, section["uid"]))
        return section

    # ------------------------------------------------------------ changes

    def show_changes(self) -> dict[str, list[dict[str, Any]]]:
        """What the draft adds, modifies (field by field, old -> new) and deletes."""
        return draft_changes(self.base, self.view, self._touched)

    def change_count(self) -> int:
        changes = self.show_changes()
        return sum(len(v) for v in changes.values())

    # ------------------------------------------------------------ publish / discard / revert

    def prepare_publish(self, comments: str = "") -> PendingPublish:
        """Write the revision entry to the fork; persist `changes` before completing."""
        if self._pending is not None:
            return self._pending
        comments = names.check_string(comments, "comments")
        heads_before = self.fork.get_heads()
        content = _merged_heads(heads_before, self.base_heads, self.domain.heads())
        revision = self.revision_entry(content, comments, self.change_count())
        revisions = child_id(self.fork, ROOT, "revisions")
        if revisions is None:
            raise PublishFailed("the domain document has no revision list")
        index = self.fork.length(revisions)
        self._commit(lambda tx: insert_value(tx, revisions, index, revision), draft=False)
        self.view.revisions.append(revision)
        self._pending = PendingPublish(revision, list(self._own_changes), heads_before)
        return self._pending

    def revision_entry(self, heads: Sequence[bytes], comments: str, changes: int) -> dict[str, Any]:
        """The revision entry a publish of this session writes, now, of the draft at
        `heads` with `changes` changed objects and rules."""
        return {
            "uid": model.new_uid(),
            "admin": self.admin,
            "server": self.server,
            "session": self.uid,
            "published-at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "comments": comments,
            "heads": hex_heads(heads),
            "changes": changes,
        }

    def abort_publish(self) -> None:
        """Undo `prepare_publish` after the changes could not be persisted."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._fork = rebuild_at(self.fork, pending.heads_before_revision, actor=self._actor)
        self._own_changes = self._own_changes[:-1]
        self.view.revisions.pop()

    def complete_publish(self, on_merged: Callable[[], None] | None = None) -> dict[str, Any]:
        """Merge the persisted draft into the live document; the session goes on from it.

        `on_merged` runs as soon as the live document holds the publish, before the
        session is rebased onto the live document.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            raise PublishFailed("nothing prepared to publish")
        live = self.domain
        if live.heads() == self.base_heads:
            # Nobody raced the draft: the fork is the live document plus the draft, so it
            # becomes the live document (a merge costs milliseconds on a large document)
            # and the session goes on in a fork of it, taken when next used.
            live.adopt_document(self.fork, self.view)
            self._fork = None
        else:
            live.doc.merge(self.fork)
        if on_merged is not None:
            on_merged()
        self._rebase()
        return pending.revision

    def discard(self) -> int:
        """Drop the draft; returns how many objects and rules it had changed."""
        count = self.change_count()
        if self._own_changes:
            # A new actor: the dropped changes' sequence numbers stay taken by the old one.
            self._actor = new_actor()
            self._fork = None
        self._rebase()
        return count

    def revert_to(self, revision_ref: str) -> dict[str, Any]:
        """Make the draft's content that of a past revision (published as a new one)."""
        self._ready_to_edit()
        revision = self.view.revision(revision_ref)
        heads = revision.get("heads")
        if not isinstance(heads, list):
            raise ValidationError(f"revision '{revision_ref}' has no content heads")
        target = self.domain.state_at(unhex_heads(heads))
        objects = self._objects_id()
        self._commit(lambda tx: write_objects_like(tx, objects, self.view, target))
        layers = child_id(self.fork, ROOT, "layers")
        if layers is None:
            raise ValidationError("the domain document has no layers")
        self._commit(lambda tx: write_layers_like(tx, layers, self.view, target))
        self._view = DomainState.from_plain(read(self.fork))
        self._touch_everything()
        return revision

    def _rebase(self) -> None:
        # The live document holds everything the fork had (it was just published or
        # dropped): the draft is empty, and starts from the live document when next used.
        self._bound = False
        self._own_changes = []
        self._unsaved = []
        self._touched = Touched()
        self._pending = None

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

    def _touch_everything(self) -> None:
        for state in (self.base, self.view):
            self._touched.objects.update(state.objects)
            for layer in state.layers.values():
                self._touched.rules.update((layer.uid, uid) for uid in layer.rules)
                self._touched.orders.add(layer.uid)

    # ------------------------------------------------------------ writing the fork

    def _commit(self, write: Any, *, draft: bool = True) -> None:
        """Run `write(tx)` as one change of the fork and remember that change.

        A `draft` change is also handed out by `take_unsaved_changes`; the revision entry
        is not, since it only ever reaches storage as part of a publish.
        """
        if self._pending is not None:
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
        self.last_active = time.time()

    def _write_fields(self, obj: bytes, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        self._commit(lambda tx: put_changed_fields(tx, obj, old, new))

    def _objects_id(self) -> bytes:
        objects = child_id(self.fork, ROOT, "objects")
        if objects is None:
            raise ValidationError("the domain document has no object map")
        return objects

    def _object_id(self, uid: str) -> bytes:
        obj = child_id(self.fork, self._objects_id(), uid)
        if obj is None:
            raise ObjectNotFound(f"object '{uid}' not found")
        return obj

    def _layer_ids(self, layer_uid: str) -> tuple[bytes, bytes]:
        layers = child_id(self.fork, ROOT, "layers")
        layer = child_id(self.fork, layers, layer_uid) if layers else None
        rules = child_id(self.fork, layer, "rules") if layer else None
        order = child_id(self.fork, layer, "order") if layer else None
        if rules is None or order is None:
            raise ObjectNotFound(f"access layer '{layer_uid}' not found")
        return rules, order


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


def _object_ref(params: Mapping[str, Any]) -> str:
    ref = params.get("uid", params.get("name"))
    if not isinstance(ref, str) or not ref:
        raise InvalidParameter("name the object with 'uid' or 'name'")
    return ref


def _rule_ref(params: Mapping[str, Any]) -> Any:
    for key in ("uid", "rule-number", "name"):
        if key in params:
            return params[key]
    raise InvalidParameter("name the rule with 'uid', 'rule-number' or 'name'")


def _indices_of(order: list[str], uid: str) -> list[int]:
    return [i for i, u in enumerate(order) if u == uid]
