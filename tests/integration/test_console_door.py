"""The console's door on an in-process server (plain HTTP through aiohttp's test server):
its files and their headers, the live event stream (refused without a login, a `domain`
event for a publish here and for changes from a peer, `ended` once the login ends), and
`show-cluster-status` of a lone server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from crdtmds.server import Server
from crdtmds.transports.console import ConsoleDoor
from crdtmds.transports.http_api import WebApiDoor
from tests.helpers.api_doors import PASSWORDS

WAIT = 5.0


@pytest.fixture
async def client(node: Server) -> AsyncIterator[TestClient]:
    console = ConsoleDoor(node.documents, node.logins, node.live_events, keepalive=0.1)
    door = WebApiDoor(node.api, max_body=1 << 20, timeout=5.0, routes=console.routes())
    async with TestClient(TestServer(door.app)) as test_client:
        yield test_client


async def login(client: TestClient, user: str = "root", domain: str | None = "acme") -> str:
    params = {"user": user, "password": PASSWORDS[user], **({"domain": domain} if domain else {})}
    reply = await client.post("/web_api/login", json=params)
    assert reply.status == 200, await reply.text()
    return str((await reply.json())["sid"])


async def call(client: TestClient, sid: str, command: str, **params: Any) -> dict[str, Any]:
    reply = await client.post(f"/web_api/{command}", json=params, headers={"X-chkp-sid": sid})
    assert reply.status == 200, await reply.text()
    return dict(await reply.json())


async def next_event(stream: ClientResponse) -> tuple[str, dict[str, Any]]:
    """The next event of a server-sent event stream (comments skipped)."""
    event, data = "message", ""
    async with asyncio.timeout(WAIT):
        while True:
            line = (await stream.content.readline()).decode()
            assert line, "the stream closed"
            line = line.rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                return event, json.loads(data)


async def test_the_console_is_served_with_a_strict_content_policy(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<crd-console>" in await page.text()
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    module = await client.get("/console/app.js")
    assert module.status == 200
    assert module.headers["Content-Type"].startswith("text/javascript")
    for path in ("/console/console.py", "/console/.hidden.js", "/console/nothing.js",
                 "/console/%2e%2e%2fconsole.py"):  # fmt: skip
        assert (await client.get(path)).status == 404, path


async def test_the_event_stream_needs_a_live_login(client: TestClient) -> None:
    for headers in ({}, {"X-chkp-sid": "forged"}):
        refused = await client.get("/console/events", headers=headers)
        assert refused.status == 401
        assert (await refused.json())["code"] == "generic_err_wrong_session_id"


async def test_a_publish_and_a_peer_change_are_streamed(client: TestClient, node: Server) -> None:
    watcher = await login(client)
    stream = await client.get("/console/events", headers={"X-chkp-sid": watcher})
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert await next_event(stream) == ("ready", {"domain": "acme"})
    editor = await login(client)
    await call(client, editor, "add-host", name="h1", **{"ipv4-address": "192.0.2.1"})
    await call(client, editor, "publish")
    event, data = await next_event(stream)
    domain = node.documents.domain("acme")
    assert event == "domain"
    assert (data["domain"], data["origin"]) == ("acme", "here")
    assert data["heads"] == sorted(h.hex() for h in domain.heads())
    # Changes persisted from a peer (what the link driver reports after its write).
    node.documents.received(domain.document_id)
    event, data = await next_event(stream)
    assert (event, data["origin"]) == ("domain", "peer")
    # Another domain's publish is not this login's business.
    other = await login(client, domain="globex")
    await call(client, other, "add-host", name="g1", **{"ipv4-address": "192.0.2.2"})
    await call(client, other, "publish")
    await call(client, watcher, "logout")
    event, data = await next_event(stream)
    assert event == "ended", (event, data)
    assert await stream.content.read() == b""  # then the stream closes


async def test_watching_does_not_keep_a_login_alive(client: TestClient, node: Server) -> None:
    sid = await login(client)
    seen = node.logins.by_sid[sid].last_seen
    stream = await client.get("/console/events", headers={"X-chkp-sid": sid})
    await next_event(stream)
    await asyncio.sleep(0.3)  # a few keep-alive rounds (0.1 s here)
    assert node.logins.by_sid[sid].last_seen == seen
    stream.close()


async def test_cluster_status_of_a_lone_server(client: TestClient, node: Server) -> None:
    sid = await login(client, domain=None)
    report = await call(client, sid, "show-cluster-status")
    (server,) = report["servers"]
    assert (server["name"], server["this-server"], server["reachable"]) == ("s1", True, True)
    assert set(report["domains"]) == {"acme", "globex"}
    assert report["domains"]["acme"]["changes-behind"] == {"s1": 0}
    assert report["domains"]["acme"]["converged"] is True


async def test_changes_missing_counts_what_a_server_lacks(client: TestClient, node: Server) -> None:
    domain = node.documents.domain("acme")
    before = [h.hex() for h in domain.heads()]
    sid = await login(client)
    for index in range(2):
        address = {"ipv4-address": f"192.0.2.{index + 9}"}
        await call(client, sid, "add-host", name=f"m{index}", **address)
    await call(client, sid, "publish")
    status = node.status
    assert status.changes_missing(domain.document_id, before) >= 1
    assert status.changes_missing(domain.document_id, [h.hex() for h in domain.heads()]) == 0
    assert status.changes_missing(domain.document_id, ["ab" * 32]) is None
    assert status.changes_missing(domain.document_id, ["not hex"]) is None


async def test_show_changes_of_a_published_revision(client: TestClient, node: Server) -> None:
    sid = await login(client)
    await call(client, sid, "add-host", name="r1", **{"ipv4-address": "192.0.2.20"})
    await call(client, sid, "publish", comments="first")
    await call(client, sid, "set-host", name="r1", **{"ipv4-address": "192.0.2.21"})
    await call(client, sid, "add-access-rule", layer="Network", name="to r1", destination=["r1"])
    await call(client, sid, "publish", comments="second")
    second, first = (await call(client, sid, "show-revisions"))["objects"][:2]
    reply = await call(client, sid, "show-changes", **{"to-session": first["uid"]})
    assert [o["name"] for o in reply["added-objects"]] == ["r1"]
    assert reply["modified-objects"] == reply["deleted-objects"] == []
    reply = await call(client, sid, "show-changes", **{"to-session": second["session"]})
    assert [o["name"] for o in reply["added-objects"]] == ["to r1"]
    (modified,) = reply["modified-objects"]
    assert modified["fields"]["ipv4-address"] == {"old": "192.0.2.20", "new": "192.0.2.21"}
    assert {"r1"} <= {o["name"] for o in reply["objects-dictionary"]}
    refused = await client.post(
        "/web_api/show-changes", json={"to-session": "nope"}, headers={"X-chkp-sid": sid}
    )
    assert refused.status == 404


async def test_publishes_into_a_later_epoch_are_streamed(client: TestClient, node: Server) -> None:
    node.epochs.publishes_per_epoch = 2  # the domain rolls after two publishes
    editor = await login(client)
    for index in range(3):
        await call(client, editor, "add-host", name=f"e{index}",
                   **{"ipv4-address": f"192.0.2.{index + 1}"})  # fmt: skip
        await call(client, editor, "publish")
        await node.epochs.idle()
    first = node.documents.cluster.domains()["acme"]["document-id"]
    newest = node.documents.domain("acme")
    assert newest.document_id != first
    watcher = await login(client)
    stream = await client.get("/console/events", headers={"X-chkp-sid": watcher})
    assert await next_event(stream) == ("ready", {"domain": "acme"})
    await call(client, editor, "add-host", name="late", **{"ipv4-address": "192.0.2.9"})
    await call(client, editor, "publish")
    event, data = await next_event(stream)
    assert (event, data["domain"], data["origin"]) == ("domain", "acme", "here")
    assert data["heads"] == sorted(h.hex() for h in newest.heads())
    await call(client, watcher, "logout")
    # show-cluster-status compares each epoch's document with its own heads.
    status = node.status
    every = status.domain_heads()["acme"]["heads"]
    assert status.changes_missing(first, every) == 0
    newest_heads = {h.hex() for h in newest.heads()}
    earlier = [h for h in every if h not in newest_heads]
    assert status.changes_missing(first, earlier) == len(newest.doc.get_changes([]))
