"""Clusters of real `crdtmds start` processes on 127.0.0.1: convergence, multi-hop, crash
and restart, partitions, late joiners, hostile input, TLS, and a stock automerge-repo
client.

Publishes go through each server's admin API (`/api`); convergence is judged by
`crdtmds status` (identical heads for every domain on every server) and by the hosts each
server shows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crdtmds.core import auth
from crdtmds.sync.protocol import Error, Join, Peer, Sync, decode, encode
from tests.helpers.cluster import (
    ADMIN,
    ADMIN_LOGIN,
    PASSWORD,
    ApiClient,
    Cluster,
    create_domain,
    host_names,
    publish_hosts,
    run_cli,
    start_cluster,
    status,
    wait_converged,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three full-mesh servers (n1 init, n2 and n3 joined), shared by the tests below that
    leave every server running."""
    cluster = start_cluster(tmp_path_factory.mktemp("mesh"), 3)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path) as made:
        yield made


def heads_of(report: dict[str, Any], domain: str) -> dict[str, list[str] | None]:
    return report["domains"][domain]["heads"]


# ---------------------------------------------------------------- full mesh


async def test_concurrent_publishes_on_three_servers_converge(mesh: Cluster) -> None:
    urls = [mesh[n].url for n in ("n1", "n2", "n3")]
    await create_domain(urls[0], "acme")
    await wait_converged(urls[0], servers=3, domains={"acme"})

    await asyncio.gather(
        *(
            publish_hosts(url, "acme", [f"{name}-{i}" for i in range(3)], octet=index + 1)
            for index, (name, url) in enumerate(zip(("a", "b", "c"), urls, strict=True))
        )
    )

    report = await wait_converged(urls[1], servers=3, domains={"acme"})
    assert report["converged"] is True
    assert len({tuple(h or ()) for h in heads_of(report, "acme").values()}) == 1
    expected = sorted(f"{p}-{i}" for p in "abc" for i in range(3))
    for url in urls:
        assert await host_names(url, "acme") == expected
    assert all(server["reachable"] for server in report["servers"])
    assert {s["name"]: sorted(s["peers"]) for s in report["servers"]} == {
        "n1": ["n2", "n3"],
        "n2": ["n1", "n3"],
        "n3": ["n1", "n2"],
    }


async def test_status_command_json_reports_convergence(mesh: Cluster) -> None:
    await wait_converged(mesh["n1"].url, servers=3)
    result = await asyncio.to_thread(
        run_cli, "status", "--server", mesh["n3"].url, "--json", *ADMIN_LOGIN
    )
    report = json.loads(result.stdout)
    assert report["converged"] is True
    assert {s["name"] for s in report["servers"]} == {"n1", "n2", "n3"}
    assert {s["role"] for s in report["servers"]} == {"primary", "secondary"}
    text = await asyncio.to_thread(run_cli, "status", "--server", mesh["n1"].url, *ADMIN_LOGIN)
    assert "converged: yes" in text.stdout


async def test_hostile_input_is_refused_and_changes_nothing(mesh: Cluster) -> None:
    url = mesh["n1"].url
    await create_domain(url, "hostile")
    before = await wait_converged(url, servers=3, domains={"hostile"})

    replies = {
        "wrong secret": await _join_with_secret(url, _other_secret(mesh.secret)),
        "garbage bytes": await _exchange(url, [b"\xff\x00 definitely not cbor"]),
        "malformed CBOR": await _authenticated_exchange(url, mesh.secret, b"\xa2\x64type"),
        "corrupt sync bytes": await _authenticated_exchange(
            url, mesh.secret, _corrupt_sync(before["domains"]["hostile"]["document-id"])
        ),
        "text frame": await _exchange(url, ["a text frame"]),
    }
    for case, reply in replies.items():
        assert isinstance(reply, Error), f"{case}: got {reply!r}"
    assert "wrong cluster secret" in replies["wrong secret"].message
    assert "CBOR" in replies["malformed CBOR"].message

    close_code = await _send_oversize(url, 16 * 1024 * 1024 + 1)
    assert close_code == 1009  # message too big

    after = await status(url)
    assert after["domains"] == before["domains"]
    assert after["cluster-document"] == before["cluster-document"]
    assert after["converged"] is True
    log = mesh["n1"].log()
    assert "wrong cluster secret" in log
    assert mesh.secret not in log


async def test_automerge_repo_client_finds_a_domain_and_sees_publishes(mesh: Cluster) -> None:
    from automerge.repo import Repo
    from automerge.transports import WebSocketClientTransport

    url = mesh["n2"].url
    entry = await create_domain(mesh["n1"].url, "interop")
    await wait_converged(url, servers=3, domains={"interop"})
    doc_url = f"automerge:{entry['document-id']}"

    repo = await Repo.load()
    async with repo:
        transport = await WebSocketClientTransport.connect(
            f"{url}/sync?user={ADMIN}&password={PASSWORD}"
        )
        connection = asyncio.create_task(repo.connect(transport))
        try:
            handle = await _find_when_connected(repo, doc_url)
            assert handle.doc()["name"] == "interop"

            await publish_hosts(mesh["n3"].url, "interop", ["seen-by-repo"])
            for _ in range(100):
                if "seen-by-repo" in _object_names(handle.doc()):
                    break
                await asyncio.sleep(0.1)
            assert "seen-by-repo" in _object_names(handle.doc())

            before = (await status(url))["domains"]["interop"]
            with handle.change() as doc:
                doc["name"] = "renamed by a repo client"
            await asyncio.wait_for(asyncio.gather(connection, return_exceptions=True), 10)
            assert (await status(url))["domains"]["interop"] == before
            assert "changes refused" in mesh["n2"].log()
        finally:
            await transport.close()
            await asyncio.wait_for(asyncio.gather(connection, return_exceptions=True), 10)


async def test_repo_client_with_wrong_password_is_refused(mesh: Cluster) -> None:
    reply = await _exchange(
        mesh["n1"].url, [encode(Join(sender_id="dashboard"))], query="?user=admin&password=no"
    )
    assert isinstance(reply, Error)
    assert "password" in reply.message


async def test_late_joiner_receives_every_domain_and_revision(mesh: Cluster) -> None:
    first = mesh["n1"].url
    await create_domain(first, "late")
    for round_ in range(3):
        await publish_hosts(mesh["n2"].url, "late", [f"late-{round_}"])
    before = await wait_converged(first, servers=3, domains={"late"})

    joiner = await asyncio.to_thread(mesh.join, "n4", peer=mesh["n3"].url)
    try:
        report = await wait_converged(first, servers=4, domains=set(before["domains"]))
        assert set(report["domains"]) == set(before["domains"])
        for name in before["domains"]:
            assert len({tuple(h or ()) for h in heads_of(report, name).values()}) == 1
        async with ApiClient(joiner.url) as api:
            await api.login("late")
            revisions = await api.call("show-revisions")
        assert len(revisions["objects"]) == 3
    finally:
        joiner.stop()
        del mesh.nodes["n4"]
        shutil.rmtree(joiner.data_dir, ignore_errors=True)


# ---------------------------------------------------------------- topologies and faults


async def test_chain_converges_through_the_middle_server(cluster: Cluster) -> None:
    no_mesh = ["--no-mesh"]
    a = cluster.init("a", start_args=no_mesh)
    b = cluster.join("b", peer=a.url, start_args=no_mesh)
    c = cluster.join("c", peer=b.url, start_args=no_mesh)
    await create_domain(a.url, "chain")
    await wait_converged(b.url, servers=3, domains={"chain"})

    await asyncio.gather(
        publish_hosts(a.url, "chain", ["from-a"], octet=1),
        publish_hosts(c.url, "chain", ["from-c"], octet=3),
    )

    report = await wait_converged(b.url, servers=3, domains={"chain"})
    peers = {s["name"]: s["peers"] for s in report["servers"]}
    assert peers == {"a": ["b"], "b": ["a", "c"], "c": ["b"]}
    assert await host_names(a.url, "chain") == ["from-a", "from-c"]
    assert await host_names(c.url, "chain") == ["from-a", "from-c"]


async def test_killed_server_loses_nothing_and_catches_up(cluster: Cluster) -> None:
    a = cluster.init("a")
    b = cluster.join("b", peer=a.url)
    await create_domain(a.url, "crash")
    await wait_converged(a.url, servers=2, domains={"crash"})

    await publish_hosts(b.url, "crash", ["acked-on-b"])
    b.kill()
    await publish_hosts(a.url, "crash", ["while-b-was-down"])
    report = await status(a.url)
    assert report["converged"] is False
    assert {s["name"]: s["reachable"] for s in report["servers"]} == {"a": True, "b": False}
    await asyncio.to_thread(b.start)

    await wait_converged(a.url, servers=2, domains={"crash"})
    assert await host_names(b.url, "crash") == ["acked-on-b", "while-b-was-down"]
    assert await host_names(a.url, "crash") == ["acked-on-b", "while-b-was-down"]

    b.stop()  # SIGTERM: a graceful shutdown
    assert b.process is not None and b.process.returncode == 0
    assert "stopping" in b.log()


async def test_partitioned_groups_accept_publishes_and_converge_after_healing(
    cluster: Cluster,
) -> None:
    from tests.helpers.tcp_proxy import TcpProxy

    no_mesh = ["--no-mesh"]
    a = cluster.init("a", start_args=no_mesh)
    port = int(a.url.rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        b = cluster.join("b", peer=proxy.url, start_args=no_mesh)  # b reaches a via the proxy
        c = cluster.join("c", peer=b.url, start_args=no_mesh)
        await create_domain(a.url, "split")
        await wait_converged(a.url, servers=3, domains={"split"})

        proxy.cut()
        await asyncio.gather(
            publish_hosts(a.url, "split", ["west-1", "west-2"], octet=1),
            publish_hosts(c.url, "split", ["east-1"], octet=3),
        )
        await publish_hosts(b.url, "split", ["east-2"], octet=2)
        await asyncio.sleep(0.5)
        assert await host_names(a.url, "split") == ["west-1", "west-2"]
        assert await host_names(c.url, "split") == ["east-1", "east-2"]
        report = await status(a.url)
        assert report["domains"]["split"]["converged"] is False

        proxy.heal()
        await wait_converged(a.url, servers=3, domains={"split"})
        everything = ["east-1", "east-2", "west-1", "west-2"]
        for node in (a, b, c):
            assert await host_names(node.url, "split") == everything


async def test_join_with_wrong_secret_fails_clearly(mesh: Cluster, tmp_path: Path) -> None:
    target = tmp_path / "intruder"
    result = await asyncio.to_thread(
        run_cli,
        "join", "--data", str(target), "--name", "intruder", "--listen", "127.0.0.1:0",
        "--peer", mesh["n2"].url, "--secret", _other_secret(mesh.secret),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "wrong cluster secret" in result.stderr
    assert not (target / "crdtmds.sqlite3").exists()
    assert mesh.secret.split(".")[1] not in mesh["n2"].log()


async def test_unknown_path_is_404_and_pings_are_answered(mesh: Cluster) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        async with connect(mesh["n1"].url + "/elsewhere", proxy=None):
            pass
    assert refused.value.response.status_code == 404
    async with connect(mesh["n1"].url + "/sync", proxy=None) as ws:
        latency = await asyncio.wait_for(await ws.ping(), 5)
        assert latency >= 0


async def test_tls_cluster_over_wss(cluster: Cluster, tmp_path: Path) -> None:
    cert, key = _self_signed_certificate(tmp_path)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    data_a, data_b = cluster.root / "a", cluster.root / "b"
    init = await asyncio.to_thread(
        run_cli, "init", "--data", str(data_a), "--name", "a", "--listen", "127.0.0.1:0",
        "--password", PASSWORD, "--json", *tls,
    )  # fmt: skip
    secret = json.loads(init.stdout)["secret"]
    a = cluster.add_node("a")
    url_a = await asyncio.to_thread(a.start)
    assert url_a.startswith("wss://127.0.0.1:")
    await asyncio.to_thread(
        run_cli, "join", "--data", str(data_b), "--name", "b", "--listen", "127.0.0.1:0",
        "--peer", url_a, "--secret", secret, *tls,
    )  # fmt: skip
    b = cluster.add_node("b")
    await asyncio.to_thread(b.start)

    for _ in range(100):
        result = await asyncio.to_thread(
            run_cli, "status", "--server", url_a, "--tls-ca", str(cert), "--json", *ADMIN_LOGIN,
            check=False,
        )
        report = json.loads(result.stdout) if result.returncode == 0 else {}
        if report.get("converged") and len(report["servers"]) == 2:
            break
        await asyncio.sleep(0.2)
    assert report["converged"] is True
    assert {s["url"].split(":")[0] for s in report["servers"]} == {"wss"}
    assert {s["name"]: s["peers"] for s in report["servers"]} == {"a": ["b"], "b": ["a"]}


# ---------------------------------------------------------------- raw protocol helpers


def _other_secret(secret: str) -> str:
    cluster_id = auth.cluster_id_of_secret(secret)
    return auth.new_secret(cluster_id)


def _server_join(secret: str, name: str = "tester") -> Join:
    cluster_id = auth.cluster_id_of_secret(secret)
    creds = auth.ServerCredentials.create(secret, cluster_id, name)
    return Join(sender_id=f"{name}-peer", peer_metadata={"crdtmds": creds.to_metadata()})


async def _exchange(url: str, frames: list[bytes | str], query: str = "") -> Any:
    """Send `frames` on a fresh /sync connection; the first message received, decoded."""
    async with connect(f"{url}/sync{query}", proxy=None, max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
        return await _next_message(ws)


async def _join_with_secret(url: str, secret: str) -> Any:
    return await _exchange(url, [encode(_server_join(secret))])


async def _authenticated_exchange(url: str, secret: str, frame: bytes) -> Any:
    """Authenticate as a server, then send `frame`; the first non-sync reply after it."""
    async with connect(f"{url}/sync", proxy=None, max_size=None) as ws:
        await ws.send(encode(_server_join(secret)))
        assert isinstance(await _next_message(ws), Peer)
        await ws.send(frame)
        while True:
            message = await _next_message(ws)
            if message is None or not isinstance(message, Sync):
                return message


async def _next_message(ws: Any) -> Any:
    try:
        frame = await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed:
        return None
    return decode(frame) if isinstance(frame, bytes) else frame


def _corrupt_sync(document_id: str) -> bytes:
    """A well-formed CBOR sync message whose Automerge bytes are not a sync message."""
    return cbor2.dumps(
        {
            "type": "sync",
            "senderId": "tester-peer",
            "targetId": "anyone",
            "documentId": document_id,
            "data": b"\x42\x05garbage-that-is-not-automerge",
        }
    )


async def _send_oversize(url: str, size: int) -> int:
    """Open /sync by hand and announce a binary frame of `size` bytes; the close code the
    server answers with as soon as it has read the frame header."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /sync HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert response.startswith(b"HTTP/1.1 101"), response
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, size) + os.urandom(4)
        writer.write(header + b"\x00" * 1024)
        close_frame = await asyncio.wait_for(reader.readexactly(4), 10)
    finally:
        writer.close()
    assert close_frame[0] == 0x88, close_frame  # FIN + close
    return int(struct.unpack("!H", close_frame[2:4])[0])


async def _find_when_connected(repo: Any, doc_url: str) -> Any:
    """The Python repo answers `find` with None until its handshake with a peer is done."""
    for _ in range(100):
        handle = await asyncio.wait_for(repo.find(doc_url), 10)
        if handle is not None:
            return handle
        await asyncio.sleep(0.1)
    raise AssertionError(f"the repo client never found {doc_url}")


def _object_names(doc: Any) -> set[str]:
    objects = doc["objects"]
    return {objects[uid]["name"] for uid in objects}


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a self-signed certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
