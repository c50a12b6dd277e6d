"""The Python client against real servers listening on 127.0.0.1, in this process.

Failover needs no gossip: each server here is its own one-server cluster with the same
administrator and a domain of the same name, which is all a login needs.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from crdtmds.api_socket import ApiError, RequestTooLarge, api_url
from crdtmds.bootstrap import init_cluster
from crdtmds.client import (
    Client,
    LeftBehind,
    ServerUnreachable,
    SessionLeftBehind,
    is_draft_edit,
)
from crdtmds.config import Limits
from crdtmds.server import Server

USER, PASSWORD = "root", "root-password"
WEB = {"name": "web", "ipv4-address": "192.0.2.10"}

StartServer = Callable[..., Awaitable[Server]]


async def start_node(data_dir: Path, limits: Limits | None = None) -> Server:
    node = await Server.open(data_dir, limits=limits)
    await node.start(mesh=False)
    return node


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, Server]]:
    """Name -> running node; whatever is still running is stopped afterwards."""
    running: dict[str, Server] = {}
    yield running
    for node in running.values():
        await node.stop()  # a no-op network-wise for a node a test stopped already


@pytest.fixture
def start_server(tmp_path: Path, servers: dict[str, Server]) -> StartServer:
    async def start(name: str, limits: Limits | None = None) -> Server:
        data_dir = tmp_path / name
        if not data_dir.exists():
            await init_cluster(
                data_dir, name=name, listen_host="127.0.0.1", listen_port=0, url="",
                region="test", admin=USER, password=PASSWORD,
            )  # fmt: skip
            node = await start_node(data_dir, limits)
            await node.cluster_admin.create_domain("acme", created_by=USER)
        else:
            node = await start_node(data_dir, limits)
        servers[name] = node
        return node

    return start


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def test_server_urls_are_normalised_to_the_api_endpoint() -> None:
    assert api_url("ws://127.0.0.1:8443") == "ws://127.0.0.1:8443/api"
    assert api_url("http://h:1/") == "ws://h:1/api"
    assert api_url("wss://h:1/api") == "wss://h:1/api"
    with pytest.raises(ValueError):
        api_url("h:1")
    assert is_draft_edit("add-host") and is_draft_edit("delete-access-rule")
    assert not is_draft_edit("add-domain") and not is_draft_edit("show-hosts")


async def test_calls_return_results_and_errors_raise_api_error(start_server: StartServer) -> None:
    node = await start_server("s1")
    async with Client([node.config.url], user=USER, password=PASSWORD, domain="acme") as client:
        assert client.sid and client.server == api_url(node.config.url)
        host = await client.call("add-host", **WEB)
        assert host["name"] == "web" and client.unpublished
        with pytest.raises(ApiError) as caught:
            await client.call("add-host", **WEB)
        assert caught.value.code == "err_name_in_use"
        assert caught.value.details["name"] == "web"
        await client.call("publish")
        assert not client.unpublished
        sid = client.sid
    stale = Client.resume([node.config.url], sid=sid or "", user=USER)
    with pytest.raises(ApiError) as caught:
        await stale.call("show-hosts")
    assert caught.value.code == "generic_err_wrong_session_id"  # closing logged out
    await stale.close()


async def test_wrong_password_raises_login_failed(start_server: StartServer) -> None:
    node = await start_server("s1")
    client = Client([node.config.url], user=USER, password="wrong")
    with pytest.raises(ApiError) as caught:
        await client.login()
    assert caught.value.code == "err_login_failed"
    await client.close()


async def test_failover_retries_a_read_on_the_next_server(start_server: StartServer) -> None:
    first, second = await start_server("s1"), await start_server("s2")
    urls = [first.config.url, second.config.url]
    async with Client(urls, user=USER, password=PASSWORD, domain="acme", timeout=5) as client:
        assert client.server == api_url(urls[0])
        await client.call("show-hosts")
        await first.stop()
        reply = await client.call("show-hosts")
        assert reply["total"] == 0
        assert client.server == api_url(urls[1])
        assert client.left_behind == []
        await client.call("add-host", **WEB)
        await client.call("publish")
    assert second.documents.domain("acme").state.find_object("web") is not None


async def test_an_unpublished_draft_on_a_lost_server_is_reported(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await start_server("s1"), await start_server("s2")
    urls = [first.config.url, second.config.url]
    async with Client(urls, user=USER, password=PASSWORD, domain="acme", timeout=5) as client:
        await client.call("add-host", **WEB)
        lost_session = client.session_uid
        await first.stop()
        with (
            caplog.at_level(logging.WARNING, logger="crdtmds.client"),
            pytest.raises(SessionLeftBehind) as caught,
        ):
            await client.call("publish")
        assert caught.value.code == "err_session_left_behind"
        assert caught.value.details["session"] == lost_session
        assert client.left_behind == [LeftBehind(api_url(urls[0]), lost_session)]
        assert any("unpublished" in r.getMessage() for r in caplog.records)
        assert client.server == api_url(urls[1])
        assert not client.unpublished
        assert (await client.call("show-changes"))["total"] == 0  # a new, empty session
    assert second.documents.domain("acme").state.find_object("web") is None


@pytest.mark.parametrize(
    ("server_limit", "padding", "message"),
    [
        (None, 20 * 1024 * 1024, "request too large (limit 16 MiB)"),  # refused by the client
        (64 * 1024, 100_000, "request too large (limit 64 KiB)"),  # closed by the server
    ],
)
async def test_an_oversize_request_is_refused_without_failover(
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    server_limit: int | None,
    padding: int,
    message: str,
) -> None:
    limits = Limits(max_message_size=server_limit) if server_limit else None
    first, second = await start_server("s1", limits), await start_server("s2")
    urls = [first.config.url, second.config.url]
    async with Client(urls, user=USER, password=PASSWORD, domain="acme", timeout=5) as client:
        await client.call("add-host", **WEB)
        session = client.session_uid
        big = {"name": "big", "ipv4-address": "192.0.2.11", "comments": "x" * padding}
        with caplog.at_level(logging.INFO, logger="crdtmds.client"):
            with pytest.raises(RequestTooLarge) as caught:
                await client.call("add-host", **big)
            assert (caught.value.code, caught.value.message) == ("err_request_too_large", message)
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert client.server == api_url(urls[0])
        assert client.left_behind == []
        assert client.session_uid == session
        assert (await client.call("show-session"))["changes"] == 1  # the draft is still there
        await client.call("publish")
    assert first.documents.domain("acme").state.find_object("web") is not None


async def test_a_restarted_server_gives_the_draft_back(start_server: StartServer) -> None:
    node = await start_server("s1")
    async with Client([node.config.url], user=USER, password=PASSWORD, domain="acme",
                      timeout=5) as client:  # fmt: skip
        await client.call("add-host", **WEB)
        session = client.session_uid
        await node.stop()
        restarted = await start_server("s1")
        assert restarted.config.url == node.config.url
        changes = await client.call("show-changes")
        assert [o["name"] for o in changes["added-objects"]] == ["web"]
        assert client.session_uid == session and client.unpublished
        assert client.left_behind == []
        await client.call("publish")
    assert restarted.documents.domain("acme").state.find_object("web") is not None


async def test_a_login_the_server_forgot_is_renewed(start_server: StartServer) -> None:
    node = await start_server("s1")
    client = Client.resume([node.config.url], sid="forgotten", user=USER, password=PASSWORD,
                           domain="acme")  # fmt: skip
    assert (await client.call("show-hosts"))["total"] == 0
    assert client.sid != "forgotten"
    await client.close()


async def test_a_resumed_login_without_password_cannot_fail_over(
    start_server: StartServer,
) -> None:
    first, second = await start_server("s1"), await start_server("s2")
    urls = [first.config.url, second.config.url]
    owner = Client(urls, user=USER, password=PASSWORD, domain="acme")
    await owner.login()
    resumed = Client.resume(urls, sid=owner.sid or "", user=USER, server=urls[0])
    assert (await resumed.call("show-hosts"))["total"] == 0
    await first.stop()
    with pytest.raises(ApiError) as caught:
        await resumed.call("show-hosts")
    assert caught.value.code == "err_login_required"
    await resumed.close()
    await owner.close()


async def test_no_reachable_server_raises_server_unreachable() -> None:
    client = Client([closed_port_url(), closed_port_url()], user=USER, password=PASSWORD,
                    timeout=2)  # fmt: skip
    with pytest.raises(ServerUnreachable) as caught:
        await client.call("show-domains")
    assert caught.value.code == "err_server_unreachable"
    await client.close()
