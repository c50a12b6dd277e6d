"""Commands of published revisions: list them, revert to one, and verify the policy."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from crdtmds.api.call import Access, Call, Command, command
from crdtmds.api.params import (
    PAGING,
    page_of,
)
from crdtmds.api.replies import domain_ref
from crdtmds.core import names
from crdtmds.core.docdata import has_heads, unhex_heads
from crdtmds.core.epochs import EpochChain
from crdtmds.errors import InvalidParameter, MissingParameter, ObjectNotFound, ValidationError

log = logging.getLogger("crdtmds.api")


async def _show_revisions(call: Call) -> dict[str, Any]:
    state, entry = call.read_view()
    listed = _with_earlier_epochs(call, entry, state.revisions)
    revisions = [{**r, "type": "revision", "domain": domain_ref(entry)} for r in listed]
    revisions.reverse()  # newest first
    page, bounds = page_of(revisions, call.params)
    return {"objects": page, **bounds}


async def _revert_to_revision(call: Call) -> dict[str, Any]:
    target = _revert_target(call.params)
    comments = names.check_string(call.params.get("comments", ""), "comments")
    async with call.editing() as session:
        if session.has_changes():
            raise ValidationError(
                "the session has unpublished changes: publish or discard them before a revert"
            )
        listed = _with_earlier_epochs(call, call.domain_entry(), session.view.revisions)
        revision = _find_revision(listed, target)
        # The domain's view and the fork are brought up to date here, on the event loop;
        # the revert itself (reads at the revision's heads, one put per field: seconds on
        # a large domain) runs in a worker thread and touches only the draft.
        session.draft.ready_to_edit()
        heads = unhex_heads(revision.get("heads") or [])
        if heads and has_heads(session.fork, heads):
            await call.off_loop(session.revert_to, revision["uid"])
        else:
            # Heads of an earlier epoch: read in its document, here on the event loop
            # (gossip may write that document), then written into the draft off it.
            earlier = call.services.documents.epoch_chain(session.domain).state_of(revision)
            await call.off_loop(session.revert_to_state, earlier)
        note = comments or f"revert to revision {revision['uid']}"
        # Writing the revision entry counts every changed object: in the worker too. The
        # publish then takes it as prepared, and keeps its order (durable, then gossip).
        await call.off_loop(session.prepare_publish, note)
        published = await call.services.sessions.publish(session, note)
    task = call.services.tasks.record(call.login.admin, "Revert operation", {"revision": published})
    return {"message": "OK", "task-id": task["task-id"], "revision": published}


def _revert_target(params: Mapping[str, Any]) -> str:
    for key in ("to-revision", "to-session"):
        if key in params:
            value = params[key]
            if not isinstance(value, str) or not value:
                raise InvalidParameter(
                    f"'{key}' must be a revision uid", details={"parameter": key}
                )
            return value
    raise MissingParameter("give 'to-revision' (a revision uid)",
                           details={"parameter": "to-revision"})  # fmt: skip


def _with_earlier_epochs(
    call: Call, entry: Mapping[str, Any], current: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The revisions of the domain's earlier epochs (`crdtmds.core.epochs`), oldest
    first, then `current`, those of its newest; each once."""
    documents = call.services.documents
    chain = documents.epoch_chain(documents.domain(entry["document-id"]))
    if len(chain.documents) == 1:
        return current
    earlier = EpochChain(chain.documents[:-1]).revisions()
    seen = {r.get("uid") for r in earlier}
    return [*earlier, *(r for r in current if r.get("uid") not in seen)]


def _find_revision(revisions: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """A revision by its uid, or the latest one published by the session `ref`."""
    for revision in reversed(revisions):
        if ref in (revision.get("uid"), revision.get("session")):
            return revision
    raise ObjectNotFound(f"revision '{ref}' not found", details={"reference": ref})


async def _verify_policy(call: Call) -> dict[str, Any]:
    state, entry = call.read_view()
    problems = state.verify()
    return {"domain": domain_ref(entry), "problems": problems, "total": len(problems)}


COMMANDS: dict[str, Command] = {
    "show-revisions": command(_show_revisions, Access.READ, "domain", PAGING),
    "revert-to-revision": command(
        _revert_to_revision, Access.WRITE, "to-revision to-session comments"
    ),
    "verify-policy": command(_verify_policy, Access.READ, "domain policy-package"),
}
