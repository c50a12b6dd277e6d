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
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState
from crdtmds.core.draft import PastRevision
from crdtmds.core.epochs import EpochChain
from crdtmds.core.revert import revision_state
from crdtmds.core.session_diff import state_changes
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
        # The domain's view is brought up to date here, on the event loop; the revert
        # (reads at the revision's heads on a fork of its own, then one put per field,
        # seconds on a large domain) runs in a worker thread and touches only the draft.
        session.draft.ready_to_edit()
        await call.services.sessions.persister.recall_revision_changes(session.domain)
        past = _earlier_revision(call, session.domain, revision, session.view.revisions)
        await call.off_loop(session.revert_to, revision["uid"], past)
        note = comments or f"revert to revision {revision['uid']}"
        # Writing the revert and its revision entry as one change: in the worker too.
        # The publish keeps its order (durable, then gossip).
        published = await call.services.sessions.publish(session, note, runner=call.off_loop)
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
    chain = _chain(call, entry)
    if len(chain.documents) == 1:
        return current
    earlier = EpochChain(chain.documents[:-1]).revisions()
    seen = {r.get("uid") for r in earlier}
    return [*earlier, *(r for r in current if r.get("uid") not in seen)]


def _chain(call: Call, entry: Mapping[str, Any]) -> EpochChain:
    documents = call.services.documents
    return documents.epoch_chain(documents.domain(entry["document-id"]))


def _earlier_revision(
    call: Call, domain: Domain, revision: dict[str, Any], listed: list[dict[str, Any]]
) -> PastRevision | None:
    """For a revision of an earlier epoch: the domain as it left it, read here on the
    event loop (gossip may write that document), for the revert in a worker thread."""
    if any(r.get("uid") == revision.get("uid") for r in listed):
        return None
    state = call.services.documents.epoch_chain(domain).state_of(revision)
    return lambda uid: (revision, state) if uid == revision.get("uid") else None


def _find_revision(revisions: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """A revision by its uid, or the latest one published by the session `ref`."""
    for revision in reversed(revisions):
        if ref in (revision.get("uid"), revision.get("session")):
            return revision
    raise ObjectNotFound(f"revision '{ref}' not found", details={"reference": ref})


def revision_changes(
    call: Call, ref: str
) -> tuple[dict[str, list[dict[str, Any]]], DomainState, DomainState]:
    """The changes of the published revision `ref` (its uid or its session's): from the
    revision listed before it (or an empty domain) to it, with both states. Of two
    revisions published at once on two servers, the one listed later also shows the
    other's changes."""
    entry = call.domain_entry()
    domain = call.services.documents.domain(entry["document-id"])
    chain = _chain(call, entry)
    revisions = chain.revisions() if len(chain.documents) > 1 else domain.state.revisions
    index = next(
        (i for i in reversed(range(len(revisions)))
         if ref in (revisions[i].get("uid"), revisions[i].get("session"))),
        None,
    )  # fmt: skip
    if index is None:
        raise ObjectNotFound(f"revision '{ref}' not found", details={"reference": ref})
    def state(revision: dict[str, Any]) -> DomainState:
        if len(chain.documents) == 1:
            return revision_state(domain, revision)
        return chain.state_of(revision)  # in the epoch's document that holds it

    after = state(revisions[index])
    before = state(revisions[index - 1]) if index > 0 else DomainState(name=after.name)
    return state_changes(before, after), before, after



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
