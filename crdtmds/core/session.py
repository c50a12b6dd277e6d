from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from crdtmds.core import model, names
from crdtmds.core.docdata import hex_heads, new_actor
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.draft import Draft, Published
from crdtmds.core.edits import Edit


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
        self.draft = draft  # the draft's base, edits and view

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
        changes: Sequence[bytes],
        name: str = "",
        description: str = "",
        created_at: float | None = None,
    ) -> Session:
        """A session rebuilt after a restart from its base heads and its stored edits."""
        return cls(
            uid=uid,
            domain=domain,
            admin=admin,
            server=server,
            draft=Draft.restore(domain, base_heads=base_heads, stored=changes),
            name=name,
            description=description,
            created_at=created_at,
        )

    # The draft's state, as callers read it (see `Draft`).
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
    def stored_edits(self) -> list[bytes]:
        """Every edit of the draft, in the form `take_unsaved_changes` hands out."""
        return self.draft.stored_edits

    def take_unsaved_changes(self) -> list[bytes]:
        """Edits taken since the last call: persist them to keep the draft."""
        return self.draft.take_unsaved()

    def return_unsaved_changes(self, changes: list[bytes]) -> None:
        """Give back what `take_unsaved_changes` returned when persisting it failed."""
        self.draft.return_unsaved(changes)

    def has_changes(self) -> bool:
        return self.draft.has_changes()

    # ------------------------------------------------------------ objects

    def add_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("add-object", dict(params), obj_type))

    def set_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("set-object", dict(params), obj_type))

    def delete_object(self, obj_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("delete-object", dict(params), obj_type))

    # ------------------------------------------------------------ rules and sections

    def add_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("add-rule", dict(params)))

    def set_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("set-rule", dict(params)))

    def delete_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("delete-rule", dict(params)))

    def add_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("add-section", dict(params)))

    def set_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("set-section", dict(params)))

    def delete_section(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.draft.run(Edit("delete-section", dict(params)))

    # ------------------------------------------------------------ changes

    def show_changes(self) -> dict[str, list[dict[str, Any]]]:
        """What the draft adds, modifies (field by field, old -> new) and deletes."""
        return self.draft.changes()

    def change_count(self) -> int:
        changes = self.show_changes()
        return sum(len(v) for v in changes.values())

    # ------------------------------------------------------------ publish / discard / revert

    def publish(self, comments: str, actor: bytes) -> Published:
        """Write the draft and its revision entry as one change by `actor` (see
        `Draft.publish`); the caller makes it durable, then calls `published`."""
        comments = names.check_string(comments, "comments")
        return self.draft.publish(
            actor, lambda heads, count: revision_entry(self, heads, comments, count)
        )

    def published(self, published: Published) -> None:
        """The publish is durable: a revert's fork becomes the live document, and the
        draft starts again, empty, from the live domain."""
        if published.fork is not None:
            self.domain.adopt_or_merge(published.fork, published.state, published.heads_before)
        self.draft.empty()

    def abort_publish(self, published: Published) -> None:
        """The publish could not be made durable: take its change back out of the live
        document. The draft is kept as it was."""
        if published.fork is None:
            self.domain.drop_change(published.change[0])

    def publish_in_memory(self, comments: str = "", actor: bytes | None = None) -> dict[str, Any]:
        """Publish with nothing to make durable (tools and tests working on documents in
        memory): `publish` then `published`; returns the revision entry."""
        published = self.publish(comments, actor or new_actor())
        self.published(published)
        return published.revision

    def discard(self) -> int:
        """Drop the draft; returns how many objects and rules it had changed."""
        count = self.change_count()
        self.draft.empty()
        return count

    def revert_to(self, revision_ref: str) -> dict[str, Any]:
        """Make the draft's content that of a past revision (published as a new one).

        Reads the past from a fork of its own (see `crdtmds.core.revert`): the command
        layer runs it in a worker thread, under the session's lock, so that a large
        revert does not stop the event loop (see `api/commands/revisions.py`)."""
        revision = self.view.revision(revision_ref)
        self.draft.revert_to(revision["uid"])
        return revision


def revision_entry(
    session: Session, heads: Sequence[bytes], comments: str, changes: int
) -> dict[str, Any]:
    """The revision entry a publish of `session` writes, now, with `changes` changed
    objects and rules. `heads` are those the publish's change is written on: the content
    of the revision is that change's (see `crdtmds.core.revert.content_heads`)."""
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
