"""The node's network side, in one process: listening on port 0, joining, gossip of a
publish between two nodes, restart and redial, duplicate links, and the join handshake's
checks. Real sockets on 127.0.0.1; multi-process scenarios are in test_cluster.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from automerge.core import Document, SyncState
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from crdtmds.bootstrap import init_cluster, introduce, join_cluster
from crdtmds.config import DATABASE_FILE, Limits
from crdtmds.core import auth
from crdtmds.errors import AuthenticationFailed, ClusterError, NameInUse, ProtocolError
from crdtmds.net.urls import advertised_url_for
from crdtmds.server import Server
from crdtmds.sync.protocol import Error, Join, Peer, decode, encode
from crdtmds.sync.sync_message import sync_message_heads

pytestmark = pytest.mark.timeout(30)

PASSWORD = "node-test-password"


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def start_primary(root: Path, name: str = "a", *, mesh: bool = True) -> Server:
    await init_cluster(
        root / name, name=name, listen_host="127.0.0.1", listen_port=0, url="",
        region="eu", admin="admin", password=PASSWORD,
    )  # fmt: skip
    node = await Server.open(root / name)
    await node.start(mesh=mesh)
    return node


async def start_secondary(
    root: Path, name: str, peer: Server, *, mesh: bool = True, peers: tuple[str, ...] = ()
) -> Server:
    await join_cluster(
        root / name, name=name, listen_host="127.0.0.1", listen_port=0, region="us",
        peer=peer.config.url, secret=peer.config.secret, timeout=10,
    )  # fmt: skip
    node = await Server.open(root / name)
    await node.start(mesh=mesh, peers=peers)
    return node


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    a = await start_primary(tmp_path)
    b = await start_secondary(tmp_path, "b", a)
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def publish_host(node: Server, domain: str, name: str) -> None:
    session = await node.sessions.open(domain, admin="admin")
    session.add_object("host", {"name": name, "ipv4-address": "192.0.2.1"})
    await node.sessions.publish(session)


def host_names(node: Server, domain: str) -> list[str]:
    return sorted(o["name"] for o in node.documents.domain(domain).state.objects_of_type("host"))


# ---------------------------------------------------------------- listening and status


async def test_port_zero_is_recorded_and_kept_across_restarts(tmp_path: Path) -> None:
    node = await start_primary(tmp_path)
    port = node.config.listen_port
    assert port != 0
    assert node.config.url == f"ws://127.0.0.1:{port}"
    assert node.documents.cluster.servers()["a"]["url"] == node.config.url
    await node.stop()

    again = await Server.open(tmp_path / "a")
    try:
        assert again.config.listen_port == port
        await again.start()
        assert again.config.url == f"ws://127.0.0.1:{port}"
    finally:
        await again.stop()


async def test_local_status_reports_identity_peers_and_heads(pair: tuple[Server, Server]) -> None:
    a, b = pair
    entry = await a.cluster_admin.create_domain("acme", created_by="admin")
    await wait_until(
        lambda: b.status.local_status()["domains"] == a.status.local_status()["domains"]
    )
    # The two servers dialed each other; one link goes after a grace period.
    await wait_until(lambda: b.status.local_status()["connections"]["servers"] == 1)

    status = b.status.local_status()
    assert (status["name"], status["region"], status["role"]) == ("b", "us", "secondary")
    assert status["url"] == b.config.url
    assert status["peers"] == ["a"]
    assert status["connections"] == {"servers": 1, "repo-clients": 0}
    assert status["domains"]["acme"]["document-id"] == entry["document-id"]
    assert status["domains"]["acme"]["heads"] == a.status.domain_heads()["acme"]["heads"]
    assert {s["name"]: s["role"] for s in status["servers"]} == {
        "a": "primary",
        "b": "secondary",
    }
    assert status["cluster-document"]["document-id"] == a.config.cluster_document_id


# ---------------------------------------------------------------- gossip between nodes


async def test_publish_reaches_the_other_node_and_is_persisted_there(
    pair: tuple[Server, Server], tmp_path: Path
) -> None:
    a, b = pair
    await a.cluster_admin.create_domain("acme", created_by="admin")
    await wait_until(
        lambda: (
            "acme" in b.status.domain_heads() and b.status.domain_heads() == a.status.domain_heads()
        )
    )

    await publish_host(b, "acme", "from-b")
    await publish_host(a, "acme", "from-a")
    await wait_until(lambda: a.status.domain_heads() == b.status.domain_heads())
    assert host_names(a, "acme") == host_names(b, "acme") == ["from-a", "from-b"]

    await b.stop()
    reopened = await Server.open(tmp_path / "b")
    try:
        assert host_names(reopened, "acme") == ["from-a", "from-b"]
    finally:
        await reopened.close()


async def test_dialer_reconnects_when_the_peer_comes_back(pair: tuple[Server, Server]) -> None:
    a, b = pair
    await wait_until(lambda: a.links.connected_peers() == ["b"])
    data_dir = b.data_dir
    await b.stop()
    await wait_until(lambda: a.links.connected_peers() == [])
    await a.cluster_admin.create_domain("while-b-was-away", created_by="admin")

    back = await Server.open(data_dir)
    try:
        await back.start()
        await wait_until(lambda: back.status.domain_heads() == a.status.domain_heads())
        assert a.links.connected_peers() == ["b"]
        assert "while-b-was-away" in back.status.domain_heads()
    finally:
        await back.stop()


async def test_two_servers_dialing_each_other_keep_one_link(pair: tuple[Server, Server]) -> None:
    a, b = pair  # b dials a (its join peer and the cluster document); a dials b (mesh)
    await wait_until(
        lambda: a.links.connected_peers() == ["b"] and b.links.connected_peers() == ["a"]
    )
    await wait_until(
        lambda: (
            a.status.local_status()["connections"]["servers"] == 1
            and b.status.local_status()["connections"]["servers"] == 1
        )
    )
    await a.cluster_admin.create_domain("after-dedup", created_by="admin")
    await wait_until(lambda: b.status.domain_heads() == a.status.domain_heads())


async def test_without_mesh_a_server_dials_only_its_peers(tmp_path: Path) -> None:
    a = await start_primary(tmp_path, mesh=False)
    b = await start_secondary(tmp_path, "b", a, mesh=False)
    c = await start_secondary(tmp_path, "c", b, mesh=False)
    # Without the mesh, b is c's only way to a: it must relay at once, never later.
    b.limits = dataclasses.replace(b.limits, relay_delay=3600.0)
    try:
        await a.cluster_admin.create_domain("chain", created_by="admin")
        await wait_until(lambda: c.status.domain_heads() == a.status.domain_heads())
        assert "chain" in c.status.domain_heads()
        assert c.links.connected_peers() == ["b"]
        assert "c" not in a.links.connected_peers()
    finally:
        for node in (c, b, a):
            await node.stop()


async def test_extra_peers_are_dialed_without_mesh(tmp_path: Path) -> None:
    a = await start_primary(tmp_path, mesh=False)
    b = await start_secondary(tmp_path, "b", a, mesh=False)
    c = await start_secondary(tmp_path, "c", a, mesh=False, peers=(b.config.url + "/sync",))
    try:
        await wait_until(lambda: c.links.connected_peers() == ["a", "b"])
        assert b.links.connected_peers() == ["a", "c"]
    finally:
        for node in (c, b, a):
            await node.stop()


async def test_replayed_server_credentials_are_refused(tmp_path: Path) -> None:
    a = await start_primary(tmp_path)
    try:
        secret = a.config.secret
        creds = auth.ServerCredentials.create(secret, a.config.cluster_id, "replayer")
        join = encode(Join("replayer-peer", peer_metadata={"crdtmds": creds.to_metadata()}))
        replies = []
        for _ in range(2):
            async with connect(a.config.url + "/sync", proxy=None) as ws:
                await ws.send(join)
                replies.append(decode(await asyncio.wait_for(ws.recv(), 5)))
        assert isinstance(replies[0], Peer)
        assert isinstance(replies[1], Error)
        assert replies[1].message == "replayed server credentials"
    finally:
        await a.stop()


@pytest.mark.parametrize("burst", ["error then join", "error alone"])
async def test_a_peer_that_reports_an_error_is_closed_at_once(tmp_path: Path, burst: str) -> None:
    """The server closes the connection it says it closes, well before the admission
    timeout (10 s by default), even when more frames follow the error in one burst."""
    a = await start_primary(tmp_path)
    try:
        frames = [cbor2.dumps({"type": "error", "message": "x"})]
        if burst == "error then join":
            frames.append(encode(Join(sender_id="repo-client")))
        async with connect(a.config.url + "/sync", proxy=None) as ws:
            started = asyncio.get_running_loop().time()
            for frame in frames:
                await ws.send(frame)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(a.limits.handshake_timeout / 5):
                    while True:
                        await ws.recv()
            elapsed = asyncio.get_running_loop().time() - started
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == "peer reported an error: x"
        assert elapsed < 1.0
    finally:
        await a.stop()


async def test_a_peer_over_the_message_size_limit_is_redialed_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every link between a server with a 1 KiB frame limit and one that sends it more
    fails; the dialers back off as for any failed link, and each server says so once."""
    a = await start_primary(tmp_path)
    await a.cluster_admin.create_domain("acme", created_by="admin")
    await join_cluster(
        tmp_path / "b", name="b", listen_host="127.0.0.1", listen_port=0, region="us",
        peer=a.config.url, secret=a.config.secret, timeout=10,
    )  # fmt: skip
    b = await Server.open(tmp_path / "b", limits=Limits(max_message_size=1024))
    try:
        with caplog.at_level(logging.INFO, logger="crdtmds"):
            await b.start()
            session = await a.sessions.open("acme", admin="admin")
            for index in range(30):  # ~10 KB of changes for b
                session.add_object(
                    "host", {"name": f"h{index}", "ipv4-address": f"192.0.2.{index + 1}"}
                )
            await a.sessions.publish(session)
            await asyncio.sleep(3.0)  # unbacked, the links came back ~20 times a second
    finally:
        await b.stop()
        await a.stop()
    links = [r for r in caplog.records if r.getMessage().startswith("accepted server")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(links) <= 16
    assert len(warnings) == 2, warnings
    assert any("over this server's limit of 1 KiB (--max-message-size)" in w for w in warnings)
    assert any("refused a message of ours" in w for w in warnings)


class RecordingTransport:
    """A stock automerge-repo WebSocket transport that notes the size of every frame."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.sizes: list[int] = []

    async def send(self, message: bytes) -> None:
        await self._transport.send(message)

    async def recv(self) -> bytes:
        message: bytes = await self._transport.recv()
        self.sizes.append(len(message))
        return message

    async def close(self) -> None:
        await self._transport.close()


async def test_a_stock_client_with_a_small_frame_limit_fetches_a_larger_domain(
    tmp_path: Path,
) -> None:
    """Sync messages over the server's sync message size are split: a stock client that
    accepts frames of that size gets a domain several times as large (as one that
    accepts 1 MiB gets a domain of many MiB from a server with the default)."""
    from automerge.repo import Repo
    from automerge.transports import WebSocketClientTransport

    limit = 64 * 1024
    await init_cluster(
        tmp_path / "a", name="a", listen_host="127.0.0.1", listen_port=0, url="",
        region="eu", admin="admin", password=PASSWORD,
    )  # fmt: skip
    node = await Server.open(tmp_path / "a", limits=Limits(max_sync_message_size=limit))
    try:
        await node.start()
        entry = await node.cluster_admin.create_domain("big", created_by="admin")
        for batch in range(20):  # 160 hosts with 2 KB comments, in 20 changes
            session = await node.sessions.open("big", admin="admin")
            for index in range(8):
                host = {"name": f"h{batch}-{index}", "ipv4-address": f"10.0.{batch}.{index + 1}"}
                session.add_object("host", {**host, "comments": os.urandom(1000).hex()})
            await node.sessions.publish(session)
        assert len(node.documents.domain("big").doc.save()) > 2 * limit

        socket = await connect(
            f"{node.config.url}/sync?user=admin&password={PASSWORD}", proxy=None, max_size=limit
        )
        transport = RecordingTransport(WebSocketClientTransport(socket))
        async with await Repo.load() as repo:
            connection = asyncio.create_task(repo.connect(transport))
            try:
                url, handle = f"automerge:{entry['document-id']}", None
                for _ in range(100):  # None until the handshake is done
                    handle = await asyncio.wait_for(repo.find(url), 5)
                    if handle is not None:
                        break
                    await asyncio.sleep(0.05)
                assert handle is not None
                await wait_until(lambda: len(handle.doc().get("objects", {})) == 160)
            finally:
                await transport.close()
                await asyncio.wait_for(asyncio.gather(connection, return_exceptions=True), 5)
        assert max(transport.sizes) <= limit
        assert sum(size > limit // 2 for size in transport.sizes) >= 3  # split, not trickled
    finally:
        await node.stop()


# ---------------------------------------------------------------- joining


async def test_join_with_a_wrong_secret_writes_nothing(tmp_path: Path) -> None:
    a = await start_primary(tmp_path)
    try:
        wrong = auth.new_secret(a.config.cluster_id)
        with pytest.raises(AuthenticationFailed, match="wrong cluster secret"):
            await join_cluster(
                tmp_path / "b", name="b", listen_host="127.0.0.1", listen_port=0,
                region="us", peer=a.config.url, secret=wrong, timeout=10,
            )  # fmt: skip
        assert not (tmp_path / "b" / DATABASE_FILE).exists()
    finally:
        await a.stop()


async def test_join_under_a_name_already_in_the_cluster_is_refused(
    pair: tuple[Server, Server], tmp_path: Path
) -> None:
    a, _ = pair
    with pytest.raises(NameInUse, match="already has a server named 'b'"):
        await join_cluster(
            tmp_path / "b2", name="b", listen_host="127.0.0.1", listen_port=0,
            region="us", peer=a.config.url, secret=a.config.secret, timeout=10,
        )  # fmt: skip
    assert not (tmp_path / "b2" / DATABASE_FILE).exists()
    assert a.documents.cluster.servers()["b"]["region"] == "us"


async def test_join_to_an_unreachable_peer_fails(tmp_path: Path) -> None:
    secret = auth.new_secret("2yB46MEHywctRYGv2cProU5MNVQq")
    with pytest.raises(ClusterError, match="cannot reach"):
        await join_cluster(
            tmp_path / "b", name="b", listen_host="127.0.0.1", listen_port=0,
            region="us", peer="ws://127.0.0.1:9", secret=secret, timeout=10,
        )  # fmt: skip
    assert not (tmp_path / "b" / DATABASE_FILE).exists()


async def test_introduce_refuses_a_listener_that_cannot_prove_the_secret() -> None:
    secret = auth.new_secret("2yB46MEHywctRYGv2cProU5MNVQq")
    cluster_id = auth.cluster_id_of_secret(secret)

    async def impostor(ws: ServerConnection) -> None:
        join = decode(await ws.recv())
        assert isinstance(join, Join)
        meta = {"cluster": cluster_id, "server": "x", "proof": "00" * 32,
                "cluster-document": "2yB46MEHywctRYGv2cProU5MNVQq"}  # fmt: skip
        await ws.send(encode(Peer("x", join.sender_id, peer_metadata={"crdtmds": meta})))

    async with serve(impostor, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(AuthenticationFailed, match="could not prove"):
            await introduce(f"ws://127.0.0.1:{port}", secret, cluster_id, "b")


# ---------------------------------------------------------------- helpers


def test_sync_message_heads_reads_the_senders_heads() -> None:
    doc = Document()
    with doc.transaction() as tx:
        from automerge.core import ROOT, ScalarType

        tx.put(ROOT, "k", ScalarType.Str, "v")
    message = doc.generate_sync_message(SyncState())
    assert message is not None
    assert sync_message_heads(message.encode()) == doc.get_heads()
    for malformed in (b"\x42\x05short", b"not a sync message"):
        with pytest.raises(ProtocolError):
            sync_message_heads(malformed)


def test_advertised_url() -> None:
    assert advertised_url_for("127.0.0.1", 7400, tls=False) == "ws://127.0.0.1:7400"
    assert advertised_url_for("::1", 7400, tls=True) == "wss://[::1]:7400"
    assert advertised_url_for("127.0.0.1", 0, tls=False) == ""


async def test_compaction_waits_for_the_log_to_match_the_snapshots(tmp_path: Path) -> None:
    node = await start_primary(tmp_path, mesh=False)
    try:
        await node.cluster_admin.create_domain("acme", created_by="admin")
        node.persister.compact_threshold = 4
        document_id = node.documents.domain("acme").document_id
        rows = []
        for index in range(12):
            await publish_host(node, "acme", f"h{index}")  # one change each
            rows.append(await node.storage.uncompacted_count(document_id))
        # The first snapshot takes the domain's first change and three publishes (4 rows);
        # the log then grows to as many rows as the snapshots took in (4, then 8).
        assert rows == [2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
        assert sorted(host_names(node, "acme")) == sorted(f"h{i}" for i in range(12))
    finally:
        await node.stop()
    reopened = await Server.open(tmp_path / "a")
    try:
        assert sorted(host_names(reopened, "acme")) == sorted(f"h{i}" for i in range(12))
    finally:
        await reopened.close()


async def test_in_a_full_mesh_changes_reach_every_server_from_their_origin(
    tmp_path: Path,
) -> None:
    a = await start_primary(tmp_path)
    b = await start_secondary(tmp_path, "b", a)
    c = await start_secondary(tmp_path, "c", a)
    nodes = (a, b, c)
    try:
        await wait_until(lambda: all(len(n.links.connected_peers()) == 2 for n in nodes))
        for node in nodes:  # relays would come only after an hour
            node.limits = dataclasses.replace(node.limits, relay_delay=3600.0)
        await a.cluster_admin.create_domain("mesh", created_by="admin")
        await wait_until(
            lambda: b.status.domain_heads() == c.status.domain_heads() == a.status.domain_heads()
        )
        await publish_host(b, "mesh", "from-b")
        await wait_until(lambda: "from-b" in host_names(c, "mesh"))
        assert host_names(a, "mesh") == host_names(c, "mesh") == ["from-b"]
    finally:
        for node in (c, b, a):
            await node.stop()
