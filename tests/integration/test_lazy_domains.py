"""Domains loaded on first use and unloaded least recently used first (in-process
servers; the multi-process reconnect is in tests/scenario/test_lazy_reconnect.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtmds.config import Limits
from crdtmds.server import Server
from tests.helpers.api_doors import connect, host

pytestmark = pytest.mark.timeout(30)


async def reopened(node: Server, path: Path, limits: Limits | None = None) -> Server:
    await node.close()
    return await Server.open(path, limits=limits)


def loaded(node: Server) -> int:
    return int(node.status.local_status()["domains_loaded"])


async def test_a_stored_domain_loads_on_its_first_api_call(node: Server, tmp_path: Path) -> None:
    admin = connect(node.api)
    await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    await admin.ok("publish")
    await admin.ok("logout")  # no draft left: nothing needs a domain at start
    heads_before = node.status.domain_heads()
    node = await reopened(node, tmp_path)
    try:
        status = node.status.local_status()
        assert (status["domains_loaded"], status["domains_total"]) == (0, 2)
        assert node.status.domain_heads() == heads_before  # known without a load
        assert loaded(node) == 0
        admin = connect(node.api)
        await admin.login("alice")
        assert [h["name"] for h in (await admin.ok("show-hosts"))["objects"]] == ["web"]
        acme = node.documents.domain("acme").document_id
        assert [d.document_id for d in node.documents.loaded_domains()] == [acme]
    finally:
        await node.close()


async def test_unloading_spares_a_domain_with_an_open_session_and_reloads_it_identical(
    node: Server, tmp_path: Path
) -> None:
    await node.cluster_admin.create_domain("initech", created_by="root")
    node = await reopened(node, tmp_path, Limits(max_loaded_domains=1))
    try:
        alice = connect(node.api)
        await alice.login("alice")  # a session on acme: acme stays loaded
        await alice.ok("add-host", **host("draft-host", "192.0.2.20"))
        acme = node.documents.domain("acme")
        for name in ("globex", "initech", "globex"):
            node.documents.domain(name)
        assert node.documents.is_loaded(acme.document_id)
        assert loaded(node) == 2  # over the limit of 1: acme is busy
        await alice.ok("publish")
        heads, hosts = acme.heads(), acme.state.objects_of_type("host")
        await alice.ok("logout")
        assert not node.sessions.by_uid  # published, then logged out: no session left
        node.documents.domain("initech")
        assert not node.documents.is_loaded(acme.document_id)
        assert loaded(node) == 1
        again = node.documents.domain("acme")
        assert again is not acme
        assert again.heads() == heads
        assert again.state.objects_of_type("host") == hosts
        assert [h["name"] for h in hosts] == ["draft-host"]
    finally:
        await node.close()


async def test_a_draft_survives_its_domain_being_asked_for_past_the_limit(
    node: Server, tmp_path: Path
) -> None:
    node = await reopened(node, tmp_path, Limits(max_loaded_domains=1))
    try:
        alice = connect(node.api)
        await alice.login("alice")
        await alice.ok("add-host", **host("kept", "192.0.2.30"))
        node.documents.domain("globex")
        node.documents.domain("globex")
        assert [h["name"] for h in (await alice.ok("show-hosts"))["objects"]] == ["kept"]
        await alice.ok("publish")
        assert [h["name"] for h in (await alice.ok("show-hosts"))["objects"]] == ["kept"]
    finally:
        await node.close()
