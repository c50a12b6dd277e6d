"""A publish that returned is on disk: a process that publishes and is SIGKILLed right after
printing OK leaves a data directory where a new process finds the revision, its content,
and the unpublished drafts of other sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crdtmds.server import Server

PUBLISHER = textwrap.dedent(
    """
    import asyncio, json, sys
    from crdtmds.core import auth
    from crdtmds.bootstrap import init_cluster
    from crdtmds.server import Server

    auth.SCRYPT_N = 2**8

    async def main(data):
        await init_cluster(data, name="s1", listen_host="127.0.0.1", listen_port=0,
                              url="", region="eu", admin="admin", password="admin-password")
        node = await Server.open(data)
        await node.cluster_admin.create_domain("acme", created_by="admin")
        session = await node.sessions.open("acme", admin="admin", name="published")
        session.add_object("host", {"name": "web", "ipv4-address": "192.0.2.10"})
        session.add_rule({"name": "allow web", "destination": ["web"], "action": "Accept"})
        await node.sessions.save_edits(session)
        draft = await node.sessions.open("acme", admin="admin", name="draft")
        draft.add_object("network", {"name": "lan", "subnet4": "10.1.0.0", "mask-length4": 16})
        await node.sessions.save_edits(draft)
        revision = await node.sessions.publish(session, "first revision")
        heads = sorted(h.hex() for h in node.documents.domain("acme").heads())
        print("OK", json.dumps({"revision": revision["uid"], "heads": heads,
                                "draft": draft.uid}), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1]))
    """
)


pytestmark = pytest.mark.usefixtures("cheap_password_hashes")


def _publish_then_sigkill(data: Path) -> dict[str, object]:
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert line.startswith("OK "), f"publisher failed: {line!r} {process.stderr.read()}"
    assert process.returncode == -signal.SIGKILL
    return json.loads(line[3:])


async def test_published_revision_survives_sigkill(tmp_path: Path) -> None:
    published = _publish_then_sigkill(tmp_path / "data")
    node = await Server.open(tmp_path / "data")
    try:
        domain = node.documents.domain("acme")
        assert sorted(h.hex() for h in domain.heads()) == published["heads"]
        state = domain.state
        revision = state.revision(str(published["revision"]))
        assert revision["comments"] == "first revision"
        assert revision["admin"] == "admin"
        assert [o["name"] for o in state.objects.values()] == ["web"]
        (rule,) = state.rulebase()
        assert rule["name"] == "allow web"
        assert rule["destination"] == [state.get_object("web")["uid"]]
    finally:
        await node.close()


async def test_unpublished_draft_survives_sigkill_unchanged(tmp_path: Path) -> None:
    published = _publish_then_sigkill(tmp_path / "data")
    node = await Server.open(tmp_path / "data")
    try:
        draft = node.sessions.get(published["draft"])
        changes = draft.show_changes()
        assert [o["name"] for o in changes["added"]] == ["lan"]
        assert changes["modified"] == [] and changes["deleted"] == []
        assert draft.view.get_object("lan")["subnet4"] == "10.1.0.0"
        assert "lan" not in node.documents.domain("acme").state.names
        await node.sessions.publish(draft, "later")
        assert "lan" in node.documents.domain("acme").state.names
    finally:
        await node.close()
