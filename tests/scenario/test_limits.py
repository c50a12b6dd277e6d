"""Limits on what one connection may cost a server, each set by a `crdtmds start` option.

A server started with small limits (`--max-message-size`, `--max-documents-per-connection`,
`--handshake-timeout`, `--idle-timeout`, `--login-failures`, `--login-lockout`) enforces
each one on real connections, answers the offender with an error or a close, and goes on
serving everyone else. Failed logins are counted per source address: that part is checked
on the API object with addresses a loopback test cannot have.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from automerge.core import Document, SyncState
from crdtmds_cli.main import app
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdtmds.bootstrap import init_cluster
from crdtmds.config import Limits
from crdtmds.core import auth
from crdtmds.server import Server
from crdtmds.sync.protocol import DocUnavailable, Error, Join, Peer, Request, decode, encode
from crdtmds.sync.protocol import new_document_id as new_id
from crdtmds.transports.ws_api import JsonConnection
from tests.helpers.api_doors import admin_api
from tests.helpers.cluster import ADMIN, PASSWORD, Cluster, NodeProcess

FRAME_LIMIT = 64 * 1024
DOCUMENT_LIMIT = 5
HANDSHAKE_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.5
LOGIN_FAILURES = 3
LOCKOUT = 1.0
REPLY_TIMEOUT = 10.0
EMPTY_SYNC_MESSAGE = Document().generate_sync_message(SyncState()).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    limits = [
        "--max-message-size", str(FRAME_LIMIT),
        "--max-documents-per-connection", str(DOCUMENT_LIMIT),
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
        "--idle-timeout", str(IDLE_TIMEOUT),
    ]  # fmt: skip
    with Cluster(tmp_path_factory.mktemp("limits")) as cluster:
        yield cluster.init("n1", start_args=limits)


@pytest.fixture
def lockout_server(tmp_path: Path) -> Iterator[NodeProcess]:
    limits = ["--login-failures", str(LOGIN_FAILURES), "--login-lockout", str(LOCKOUT)]
    with Cluster(tmp_path) as cluster:
        yield cluster.init("n1", start_args=limits)


# ---------------------------------------------------------------- helpers


async def api_call(ws: ClientConnection, command: str, **params: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"id": 1, "command": command, "params": params}))
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
    return reply


async def login_reply(url: str, password: str) -> dict[str, Any]:
    async with connect(f"{url}/api", proxy=None) as ws:
        return await api_call(ws, "login", user=ADMIN, password=password)


async def close_code(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
    assert closed.value.rcvd is not None, "the server did not send a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def next_message(ws: ClientConnection) -> Any:
    frame = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
    assert isinstance(frame, bytes)
    return decode(frame)


@pytest.fixture
async def token(server: NodeProcess) -> AsyncIterator[str]:
    """A live login's sid, for automerge-repo clients."""
    async with connect(f"{server.url}/api", proxy=None) as ws:
        reply = await api_call(ws, "login", user=ADMIN, password=PASSWORD)
        yield reply["result"]["sid"]


async def server_answers(url: str) -> None:
    async with connect(f"{url}/api", proxy=None) as ws:
        login = await api_call(ws, "login", user=ADMIN, password=PASSWORD)
        assert "sid" in login["result"]  # the login holds for this connection
        reply = await api_call(ws, "show-status")
    assert reply["result"]["name"] == "n1"


# ---------------------------------------------------------------- frame size


async def test_frames_over_the_size_limit_close_only_their_connection(server: NodeProcess) -> None:
    async with connect(f"{server.url}/api", proxy=None, max_size=None) as ws:
        reply = await api_call(ws, "show-status", padding="x" * (FRAME_LIMIT - 1000))
        assert reply["error"]["code"] == "generic_err_invalid_parameter_name"  # answered
        await ws.send(json.dumps({"id": 2, "command": "show-status", "padding": "x" * FRAME_LIMIT}))
        assert await close_code(ws) == (1009, "request too large (limit 64 KiB)")
    async with connect(f"{server.url}/sync", proxy=None, max_size=None) as ws:
        await ws.send(b"\x00" * (FRAME_LIMIT + 1))
        assert await close_code(ws) == (1009, "message too large (limit 64 KiB)")
    await server_answers(server.url)


# ---------------------------------------------------------------- documents per connection


async def test_a_peer_naming_too_many_documents_is_closed(server: NodeProcess, token: str) -> None:
    documents = [new_id() for _ in range(DOCUMENT_LIMIT + 1)]
    async with connect(f"{server.url}/sync?token={token}", proxy=None) as ws:
        await ws.send(encode(Join(sender_id="repo-client")))
        assert isinstance(await next_message(ws), Peer)
        for document_id in [*documents[:DOCUMENT_LIMIT], documents[0]]:  # one named twice
            await ws.send(encode(Request("repo-client", "n1", document_id, EMPTY_SYNC_MESSAGE)))
            answer = await next_message(ws)
            assert isinstance(answer, DocUnavailable) and answer.document_id == document_id
        await ws.send(encode(Request("repo-client", "n1", documents[-1], EMPTY_SYNC_MESSAGE)))
        refusal = await next_message(ws)
        assert isinstance(refusal, Error), refusal
        assert (
            refusal.message
            == f"too many documents on one connection (the limit is {DOCUMENT_LIMIT})"
        )
        assert (await close_code(ws))[0] == 1008  # policy violation
    await server_answers(server.url)


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize("chatter", [[], [b"\xa1\x64type\x65leave"] * 3])
async def test_a_sync_peer_not_admitted_in_time_is_closed(
    server: NodeProcess, chatter: list[bytes]
) -> None:
    """Silent, or sending only messages that need no answer: closed all the same."""
    async with connect(f"{server.url}/sync", proxy=None) as ws:
        for frame in chatter:
            await ws.send(frame)
            await asyncio.sleep(HANDSHAKE_TIMEOUT / 3)
        refusal = await next_message(ws)
        assert refusal == Error(message=f"not admitted within {HANDSHAKE_TIMEOUT:g} s")
        assert (await close_code(ws))[0] == 1008
    await server_answers(server.url)


async def test_an_idle_api_connection_is_closed_and_its_login_survives(
    server: NodeProcess,
) -> None:
    async with connect(f"{server.url}/api", proxy=None) as ws:
        sid = (await api_call(ws, "login", user=ADMIN, password=PASSWORD))["result"]["sid"]
        assert await close_code(ws) == (1000, f"idle for {IDLE_TIMEOUT:g} s")
    async with connect(f"{server.url}/api", proxy=None) as ws:
        await ws.send(json.dumps({"id": 1, "command": "show-domains", "sid": sid}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
    assert "result" in reply, reply


# ---------------------------------------------------------------- failed logins


async def test_failed_logins_lock_the_address_out_with_doubling_waits(
    lockout_server: NodeProcess,
) -> None:
    url = lockout_server.url
    for _ in range(LOGIN_FAILURES):
        reply = await login_reply(url, "wrong password")
        assert reply["error"]["code"] == "err_login_failed"
    locked = (await login_reply(url, PASSWORD))["error"]  # even the right password waits
    assert locked["code"] == "err_too_many_requests"
    assert 0 < locked["details"]["retry-after"] <= LOCKOUT

    await asyncio.sleep(locked["details"]["retry-after"] + 0.2)
    assert "sid" in (await login_reply(url, PASSWORD))["result"]  # a success forgives

    for _ in range(LOGIN_FAILURES):
        await login_reply(url, "wrong password")
    await asyncio.sleep(LOCKOUT + 0.2)
    assert (await login_reply(url, "wrong again"))["error"]["code"] == "err_login_failed"
    doubled = (await login_reply(url, PASSWORD))["error"]
    assert doubled["code"] == "err_too_many_requests"
    assert LOCKOUT < doubled["details"]["retry-after"] <= 2 * LOCKOUT


async def test_failed_logins_are_counted_per_source_address(tmp_path: Path) -> None:
    await init_cluster(
        tmp_path / "n1", name="n1", listen_host="127.0.0.1", listen_port=0, url="",
        region="default", admin=ADMIN, password=PASSWORD,
    )  # fmt: skip
    node = await Server.open(tmp_path / "n1")
    try:
        api = admin_api(node, throttle=auth.LoginThrottle(limit=2, base_delay=60))
        attacker = JsonConnection(api, "198.51.100.7:40000")
        same_host = JsonConnection(api, "198.51.100.7:40001")
        other_host = JsonConnection(api, "198.51.100.8:40000")

        async def login(connection: Any, password: str) -> dict[str, Any]:
            request = {"id": 1, "command": "login", "params": {"user": ADMIN, "password": password}}
            reply: dict[str, Any] = json.loads(await connection.handle_text(json.dumps(request)))
            return reply

        for _ in range(2):
            assert (await login(attacker, "guess"))["error"]["code"] == "err_login_failed"
        for connection in (attacker, same_host):
            reply = await login(connection, PASSWORD)
            assert reply["error"]["code"] == "err_too_many_requests"
        assert "sid" in (await login(other_host, PASSWORD))["result"]
    finally:
        await node.close()


# ---------------------------------------------------------------- defaults


def test_every_limit_is_a_start_option_with_a_sane_default() -> None:
    defaults = Limits()
    assert defaults == Limits(
        max_message_size=16 * 1024 * 1024,
        max_sync_message_size=1024 * 1024,
        max_documents_per_connection=10_000,
        login_failures=5,
        login_lockout=1.0,
        handshake_timeout=10.0,
        idle_timeout=900.0,
    )
    result = CliRunner().invoke(app, ["start", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--max-message-size", "--max-sync-message-size", "--max-documents-per-connection",
        "--login-failures",
        "--login-lockout", "--handshake-timeout", "--idle-timeout",
    ):  # fmt: skip
        assert option in result.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--log-level", "loud", "must be one of debug, info, warning, error, not 'loud'"),
        ("--peer", "http://127.0.0.1:7400", "expected ws://HOST:PORT or wss://HOST:PORT"),
        ("--peer", "ws://127.0.0.1:0", "port 0 cannot be dialed"),
        ("--peer", "ws://127.0.0.1:99999", "not a URL"),
    ],
)
def test_start_refuses_a_bad_log_level_or_peer(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    """Checked before anything else: the data directory here does not even exist."""
    result = CliRunner().invoke(app, ["start", "--data", str(tmp_path / "none"), option, value])
    assert result.exit_code == 2, result.output
    assert f"error: {option}" in result.stderr and message in result.stderr
