"""An administrator's session: a private draft of one domain.

A session is a fork of the domain document taken when it opens. Every edit is validated
against the session's own view of the domain (so names are unique as the session sees
them), then written to the fork as one Automerge change. Nobody else sees the fork.
Publishing hands the fork's own changes to the caller to persist, then brings them into
the live document: the fork becomes the live document when nobody published since it
was taken, else it is merged. Discarding drops the fork. An emptied draft starts again
from the live document when next used.

`Session` holds who works on the draft and what each edit and the publish mean; the
fork, its base and view, and the changes it wrote are its `Draft` (crdtmds.core.draft).
Neither does I/O: the caller persists `take_unsaved_changes()` after each edit and
the changes returned by `prepare_publish()` before `complete_publish()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from automerge.core import Document

from crdtmds.core import model, names, section_edits, sections
from crdtmds.core.docdata import hex_heads, insert_value, put_value, unhex_heads
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState, Layer
from crdtmds.core.draft import Draft, PendingPublish
from crdtmds.core.field_writes import put_changed_fields, write_layers_like, write_objects_like
from crdtmds.core.session_diff import draft_changes
from crdtmds.errors import InvalidParameter, NameInUse, ObjectInUse, PublishFailed, ValidationError


class Session:
    """A private draft of a domain. Construct with `Session.open` or `Session.restore`."""

    def __init__(
        self,
        *,
        uid: str,
        domain: Domain,
        admin: str,
        server: str,
        draft: Draft,
        name: str = "",
        description: str = "",
        created_at: float | None = None,
    ) -> None:
        self.uid = uid
        self.domain = domain
        self.admin = admin
        self.server = server
        self.name = name
        self.description = description
        self.created_at = created_at if created_at is not None else time.time()
        self.draft = draft  # the draft's document, base, view and own changes

    @property
    def last_active(self) -> float:  # the draft's last write, else when the session opened
        return self.draft.last_write or self.created_at

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
        return cls(
            uid=uid or model.new_uid(),
            domain=domain,
            admin=admin,
            server=server,
            draft=Draft.open(domain),
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
        return cls(
            uid=uid,
            domain=domain,
            admin=admin,
            server=server,
            draft=Draft.restore(domain, base_heads=base_heads, actor=actor, changes=changes),
            name=name,
            description=description,
            created_at=created_at,
        )

    # The draft's state, as callers read it (see `Draft`).
    @property
    def actor(self) -> bytes:
        return self.draft.actor

    @property
    def fork(self) -> Document:
        return self.draft.fork

    @property
    def base_heads(self) -> list[bytes]:
        return self.draft.base_heads

    @property
    def base(self) -> DomainState:
        return self.draft.base

    @property
    def view(self) -> DomainState:
        return self.draft.view

    @property
    def own_change_bytes(self) -> list[bytes]:
        return self.draft.own_change_bytes

    def take_unsaved_changes(self) -> list[bytes]:
        """Change chunks written since the last call: persist them to keep the draft."""
        return self.draft.take_unsaved_changes()

    def return_unsaved_changes(self, changes: list[bytes]) -> None:
        """Give back what `take_unsaved_changes` returned when persisting it failed."""
        self.draft.return_unsaved_changes(changes)

    def has_changes(self) -> bool:
        return self.draft.has_changes()

    # ------------------------------------------------------------ objects

    def add_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self.draft.ready_to_edit()
        record = model.build_object(obj_type, params, self.view.find_object)
        _check_name_free(self.view, record["name"], record["uid"])
        objects = self.draft.objects_id()
        self.draft.commit(lambda tx: put_value(tx, objects, record["uid"], record))
        self.view.put_object(record["uid"], record)
        self.draft.touched.objects.add(record["uid"])
        return record

    def set_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self.draft.ready_to_edit()
        current = self.view.get_object(_object_ref(params), obj_type)
        record = model.build_object(obj_type, params, self.view.find_object, existing=current)
        if record["name"] != current["name"]:
            _check_name_free(self.view, record["name"], record["uid"])
        if record != current:
            obj = self.draft.object_id(current["uid"])
            self.draft.commit(lambda tx: put_changed_fields(tx, obj, current, record))
            self.view.put_object(record["uid"], record)
            self.draft.touched.objects.add(record["uid"])
        return record

    def delete_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self.draft.ready_to_edit()
        record = self.view.get_object(_object_ref(params), obj_type)
        uses = self.view.where_used(record["uid"])
        if uses:
            raise ObjectInUse(
                f"{obj_type} '{record['name']}' is still used by {len(uses)} rule(s) or group(s)",
                details={"where-used": uses},
            )
        objects = self.draft.objects_id()
        self.draft.commit(lambda tx: tx.delete(objects, record["uid"]))
        self.view.remove_object(record["uid"])
        self.draft.touched.objects.add(record["uid"])
        return record

    # ------------------------------------------------------------ rules

    def add_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self.draft.ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        position = model.check_position(params.get("position", "top"))
        rule = model.build_rule(params, self.view.find_object)
        index = _raw_index(self.view, layer, position)
        rules_id, order_id = self.draft.layer_ids(layer.uid)

        def write(tx: Any) -> None:
            put_value(tx, rules_id, rule["uid"], rule)
            insert_value(tx, order_id, index, rule["uid"])

        self.draft.commit(write)
        layer.insert_rule(rule, index)
        self.draft.touched.rules.add((layer.uid, rule["uid"]))
        return _numbered(layer, rule)

    def set_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self.draft.ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        current = self.view.get_rule(layer, _rule_ref(params))
        rule = model.build_rule(params, self.view.find_object, existing=current)
        # Resolve the move before writing anything, so a bad position rejects the whole edit.
        target = None
        if "new-position" in params:
            position = model.check_position(params["new-position"], "new-position")
            target = _raw_index(self.view, layer, position, moving=rule["uid"])
        if rule != current:
            rule_id = self.draft.rule_id(layer.uid, rule["uid"])
            self.draft.commit(lambda tx: put_changed_fields(tx, rule_id, current, rule))
            layer.replace_rule(rule)
            self.draft.touched.rules.add((layer.uid, rule["uid"]))
        if target is not None:
            self._move_rule(layer, rule["uid"], target)
        return _numbered(layer, layer.rules[rule["uid"]])

    def delete_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self.draft.ready_to_edit()
        layer = self.view.get_layer(params.get("layer"))
        rule = self.view.get_rule(layer, _rule_ref(params))
        rules_id, order_id = self.draft.layer_ids(layer.uid)
        indices = layer.indices_of(rule["uid"])

        def write(tx: Any) -> None:
            tx.delete(rules_id, rule["uid"])
            for index in reversed(indices):
                tx.delete(order_id, index)

        self.draft.commit(write)
        layer.remove_rule(rule["uid"])
        self.draft.touched.rules.add((layer.uid, rule["uid"]))
        return rule

    def _move_rule(self, layer: Layer, uid: str, target: int) -> None:
        self.draft.move_in_order(layer, uid, target)

    # ------------------------------------------------------------ sections

    def add_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return section_edits.add_section(self.draft, params)

    def set_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return section_edits.set_section(self.draft, params)

    def delete_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return section_edits.delete_section(self.draft, params)

    # ------------------------------------------------------------ changes

    def show_changes(self) -> dict[str, list[dict[str, Any]]]:
        """What the draft adds, modifies (field by field, old -> new) and deletes."""
        return draft_changes(self.base, self.view, self.draft.touched)

    def change_count(self) -> int:
        changes = self.show_changes()
        return sum(len(v) for v in changes.values())

    # ------------------------------------------------------------ publish / discard / revert

    def prepare_publish(self, comments: str = "") -> PendingPublish:
        """Write the revision entry to the fork; persist `changes` before completing."""
        if self.draft.pending is not None:
            return self.draft.pending
        comments = names.check_string(comments, "comments")
        return self.draft.write_revision(
            lambda heads: revision_entry(self, heads, comments, self.change_count())
        )

    def abort_publish(self) -> None:
        """Undo `prepare_publish` after the changes could not be persisted."""
        self.draft.abort_publish()

    def complete_publish(self, on_merged: Callable[[], None] | None = None) -> dict[str, Any]:
        """Merge the persisted draft into the live document; the session goes on from it.

        `on_merged` runs as soon as the live document holds the publish, before the
        session is rebased onto the live document.
        """
        pending = self.draft.pending
        if pending is None:
            raise PublishFailed("nothing prepared to publish")
        self.draft.pending = None
        self.draft.merge_into_live()
        if on_merged is not None:
            on_merged()
        self.draft.empty()
        return pending.revision

    def discard(self) -> int:
        """Drop the draft; returns how many objects and rules it had changed."""
        count = self.change_count()
        self.draft.drop()
        return count

    def revert_to(self, revision_ref: str) -> dict[str, Any]:
        """Make the draft's content that of a past revision (published as a new one).

        Touches only the draft (its fork and view), never the live document nor the
        domain's view once `ready_to_edit` ran: the command layer runs it in a worker
        thread, under the session's lock, so that a large revert does not stop the
        event loop (see `api/commands/revisions.py`)."""
        draft = self.draft
        draft.ready_to_edit()
        revision = self.view.revision(revision_ref)
        heads = revision.get("heads")
        if not isinstance(heads, list):
            raise ValidationError(f"revision '{revision_ref}' has no content heads")
        self.revert_to_state(draft.state_at(unhex_heads(heads)))
        return revision

    def revert_to_state(self, target: DomainState) -> None:
        """Make the draft's content that of `target` (a past state, perhaps read in an
        earlier epoch's document, see `crdtmds.core.epochs`); same rules as `revert_to`."""
        draft = self.draft
        draft.ready_to_edit()
        objects, layers = draft.objects_id(), draft.layers_id()
        draft.commit(lambda tx: write_objects_like(tx, objects, self.view, target))
        draft.commit(lambda tx: write_layers_like(tx, layers, self.view, target))
        draft.reread_view()


def revision_entry(
    session: Session, heads: Sequence[bytes], comments: str, changes: int
) -> dict[str, Any]:
    """The revision entry a publish of `session` writes, now, of the draft at `heads` with
    `changes` changed objects and rules."""
    return {
        "uid": model.new_uid(),
        "admin": session.admin,
        "server": session.server,
        "session": session.uid,
        "published-at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "comments": comments,
        "heads": hex_heads(heads),
        "changes": changes,
    }


def _check_name_free(view: DomainState, name: str, uid: str) -> None:
    holders = [u for u in view.names.get(name, ()) if u != uid]
    if holders:
        raise NameInUse(
            f"the name '{name}' is already in use",
            details={"name": name, "uid": holders[0]},
        )


def _raw_index(view: DomainState, layer: Layer, position: Any, *, moving: str | None = None) -> int:
    """Index in the stored order list for a position given against the visible order
    (see `crdtmds.core.sections.raw_index`: rules and sections are anchors)."""
    return sections.raw_index(layer, position, view.get_rule, moving=moving)


def _numbered(layer: Layer, rule: dict[str, Any]) -> dict[str, Any]:
    number = layer.number_of(rule["uid"])
    return {**rule, "type": "access-rule", "layer": layer.uid, "rule-number": number}


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

