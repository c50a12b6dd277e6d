"""A large revert runs off the event loop: other connections are answered meanwhile."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from crdtmds.api.dispatch import AdminAPI
from crdtmds.core import model
from crdtmds.core import revert as revert_module
from crdtmds.core.docdata import ROOT, child_id, new_actor, put_value
from crdtmds.core.session import Session
from crdtmds.server import Server
from tests.helpers.api_doors import admin_api, connect

HOSTS = 3000


async def _domain_of_many_hosts(node: Server) -> str:
    """acme with a revision of HOSTS hosts, then emptied again; returns that revision."""
    session = await node.sessions.open("acme", admin="alice")
    session.draft.ready_to_edit()
    records = [
        model.build_object(
            "host",
            {"name": f"h{i}", "ip-address": f"10.0.{i >> 8}.{i & 255}"},
            session.view.find_object,
        )
        for i in range(HOSTS)
    ]
    await node.sessions.publish(session, "empty")
    domain = session.domain

    def write(tx: Any) -> None:
        objects = child_id(tx, ROOT, "objects")
        for record in records:
            put_value(tx, objects, record["uid"], record)

    change = domain.write(new_actor(), write)  # many hosts in one change, as from a peer
    await node.persister.persist(domain.document_id, [change])
    node.documents.changed(domain.document_id)
    session.add_object("host", {"name": "marker", "ip-address": "10.9.9.8"})
    full = await node.sessions.publish(session, "full")
    session.add_object("host", {"name": "extra", "ip-address": "10.9.9.9"})
    await node.sessions.publish(session, "one more")
    first = session.view.revisions[0]
    session.draft.ready_to_edit()
    session.revert_to(first["uid"])  # back to (almost) empty, in-process
    await node.sessions.publish(session, "emptied")
    await node.sessions.close(session)
    return full["uid"]


async def test_show_status_is_answered_while_a_large_revert_runs(
    api: AdminAPI, node: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = await _domain_of_many_hosts(node)
    started, finished = threading.Event(), threading.Event()
    original = Session.revert_to

    def observed(self: Session, ref: str, *more: Any) -> dict[str, Any]:
        started.set()
        try:
            return original(self, ref, *more)
        finally:
            finished.set()

    monkeypatch.setattr(Session, "revert_to", observed)
    alice, root = connect(api), connect(api)
    await alice.login("alice")
    await root.login("root", domain=None)
    revert = asyncio.create_task(alice.ok("revert-to-revision", **{"to-revision": full}))
    while not started.is_set():  # the worker thread has begun the revert
        await asyncio.sleep(0)
        assert not revert.done(), revert.result()
    status = await root.ok("show-status")
    # Answered on the event loop while the revert still runs in its thread.
    assert not finished.is_set() and not revert.done()
    assert status["name"] == "s1"
    reverted = await revert
    assert finished.is_set()
    # The full revision: the hosts and the marker its publish added.
    assert (await alice.ok("show-hosts", limit=1))["total"] == HOSTS + 1
    assert reverted["revision"]["comments"].startswith("revert to revision")


async def test_a_revert_after_a_restart_reads_the_revision_at_its_stored_change(
    node: Server, tmp_path: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change of a revision published here is stored with the publish: after a
    restart show-changes and the revert read the revision there, without listing the
    changes after it."""
    session = await node.sessions.open("acme", admin="alice")
    session.add_object("host", {"name": "kept", "ip-address": "10.0.0.1"})
    first = await node.sessions.publish(session, "first")
    for i in range(20):
        session.add_object("host", {"name": f"later{i}", "ip-address": f"10.0.1.{i}"})
    await node.sessions.publish(session, "later")
    await node.sessions.close(session)
    document_id = session.domain.document_id
    stored = await node.storage.revisions.changes_of(document_id)
    assert stored[first["uid"]] == bytes.fromhex(first["change"])
    await node.close()

    restarted = await Server.open(tmp_path)
    try:
        tried: list[list[bytes]] = []
        original = revert_module.content_heads

        def spy(doc: Any, heads: Any, uid: Any, candidates: Any = ()) -> list[bytes]:
            tried.append(list(candidates))
            return original(doc, heads, uid, candidates)

        monkeypatch.setattr(revert_module, "content_heads", spy)
        alice = connect(admin_api(restarted, clock=clock))
        await alice.login("alice")
        changes = await alice.ok("show-changes", **{"to-session": first["uid"]})
        assert [o["name"] for o in changes["added-objects"]] == ["kept"]
        assert tried == [[bytes.fromhex(first["change"])]]
        await alice.ok("revert-to-revision", **{"to-revision": first["uid"]})
        assert tried == [[bytes.fromhex(first["change"])]] * 2
        hosts = await alice.ok("show-hosts")
        assert [h["name"] for h in hosts["objects"]] == ["kept"]
    finally:
        await restarted.close()
