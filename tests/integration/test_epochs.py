"""A domain rolls into new epochs (`crdtmds.app.epochs`) and loses nothing: every revision
is listed and can be reverted to, whichever epoch holds it, before and after a restart."""

from __future__ import annotations

from pathlib import Path

from crdtmds.config import Limits
from crdtmds.core.epochs import cut_of
from crdtmds.server import Server
from tests.helpers.api_doors import Admin, connect, host

LIMITS = Limits(epoch_publishes=3)


async def _publish_hosts(node: Server, admin: Admin, names: list[str]) -> None:
    for index, name in enumerate(names):
        await admin.ok("add-host", **host(name, f"192.0.2.{index + 1}"))
        await admin.ok("publish")
        await node.epochs.idle()  # the epoch steps run in the background


async def _revision_uids(admin: Admin) -> list[str]:
    reply = await admin.ok("show-revisions", limit=100)
    assert reply["total"] == len(reply["objects"])
    return [r["uid"] for r in reversed(reply["objects"])]  # oldest first


async def _host_names(admin: Admin) -> set[str]:
    reply = await admin.ok("show-hosts", limit=100)
    return {o["name"] for o in reply["objects"]}


async def test_epochs_roll_and_every_revision_stays_listed_and_revertable(
    node: Server, tmp_path: Path
) -> None:
    await node.close()
    node = await Server.open(tmp_path, limits=LIMITS)
    try:
        admin = connect(node.api)
        await admin.login("root")
        names = [f"h{i}" for i in range(8)]
        await _publish_hosts(node, admin, names)
        uids = await _revision_uids(admin)
        assert len(uids) == len(set(uids)) == 8
        # Three publishes per epoch: epochs 0 and 1 hold three each, epoch 2 the last two.
        entry = node.documents.cluster.domains()["acme"]
        current = node.documents.domain("acme")
        assert current.document_id != entry["document-id"]
        assert current.domain_id == entry["document-id"]
        cut = cut_of(current.doc)
        assert cut is not None and cut.epoch == 2
        assert [r["uid"] for r in current.state.revisions] == uids[6:]
        assert len(node.documents.epoch_chain(current).documents) == 3
        assert await _host_names(admin) == set(names)
        # A revision of the first epoch: its heads are only in the first document.
        await admin.ok("revert-to-revision", **{"to-revision": uids[1]})
        assert await _host_names(admin) == {"h0", "h1"}
        assert len(await _revision_uids(admin)) == 9
        await node.epochs.idle()
        newest = node.documents.domain("acme").document_id
    finally:
        await node.close()
    node = await Server.open(tmp_path, limits=LIMITS)
    try:
        # The newest epoch is found from the links kept in storage: the earlier
        # documents stay unloaded until the revisions are listed.
        first = entry["document-id"]
        assert node.documents.epochs.chain_ids(first)[-1] == newest
        assert node.documents.domain("acme").document_id == newest
        assert not node.documents.is_loaded(first)
        # A stock repo client that may read the domain may read each of its epochs.
        reader = node.admission._repo_client_reader(lambda _document_id: True)
        assert reader(first) and reader(newest)
        assert not reader(node.documents.cluster.document_id)
        admin = connect(node.api)
        await admin.login("root")
        after = await _revision_uids(admin)
        assert after[:8] == uids and len(after) == 9
        assert await _host_names(admin) == {"h0", "h1"}
        await admin.ok("revert-to-revision", **{"to-revision": uids[6]})
        assert await _host_names(admin) == {f"h{i}" for i in range(7)}
        await _publish_hosts(node, admin, ["later"])
        assert "later" in await _host_names(admin)
        assert len(await _revision_uids(admin)) == 11
        # A rename reaches the document of the newest epoch, which every read is served from.
        root = connect(node.api)
        await root.login("root", domain=None)
        await root.ok("set-domain", name="acme", **{"new-name": "acme-renamed"})
        assert node.documents.domain("acme-renamed").state.name == "acme-renamed"
        await node.epochs.idle()
    finally:
        await node.close()


async def test_a_draft_older_than_the_cut_survives_a_restart_and_is_rebased_on_the_newest_epoch(
    node: Server, tmp_path: Path
) -> None:
    await node.close()
    node = await Server.open(tmp_path, limits=LIMITS)
    try:
        alice = connect(node.api)
        await alice.login("alice")
        await alice.ok("add-host", **host("from-old-draft", "198.51.100.1"))
        root = connect(node.api)
        await root.login("root")
        await _publish_hosts(node, root, ["a", "b", "c", "d"])  # the domain rolls meanwhile
        assert cut_of(node.documents.domain("acme").doc) is not None
        first = node.documents.cluster.domains()["acme"]["document-id"]
    finally:
        await node.close()
    node = await Server.open(tmp_path, limits=LIMITS)
    try:
        alice = connect(node.api)
        await alice.login("alice", **{"continue-last-session": True})
        old_document = node.documents.domains[first]
        old_heads = old_document.heads()
        published = (await alice.ok("publish"))  # run again on the newest epoch
        await node.epochs.idle()
        newest = node.documents.domain("acme")
        assert newest.document_id != first
        assert published["revision"]["uid"] in {r["uid"] for r in newest.state.revisions}
        assert node.documents.domains[first].heads() == old_heads  # nothing written late
        assert "from-old-draft" in await _host_names(alice)
        assert {"a", "b", "c", "d"} <= await _host_names(alice)
        uids = await _revision_uids(alice)
        assert len(uids) == len(set(uids)) == 5
    finally:
        await node.close()
