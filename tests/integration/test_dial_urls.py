"""A server told to dial another at a URL of its own choosing (`dial_urls`, `crdtmds
start --dial-url NAME=URL`) reaches it there only, and stays in the full mesh."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtmds.bootstrap import join_cluster
from crdtmds.net.urls import normalise_url
from crdtmds.server import Server
from tests.helpers.tcp_proxy import TcpProxy
from tests.integration.test_server import start_primary, wait_until

pytestmark = pytest.mark.timeout(30)


async def test_a_server_dials_another_at_its_dial_url(tmp_path: Path) -> None:
    a = await start_primary(tmp_path, mesh=False)
    await join_cluster(
        tmp_path / "b", name="b", listen_host="127.0.0.1", listen_port=0, region="us",
        peer=a.config.url, secret=a.config.secret, timeout=10,
    )  # fmt: skip
    b = await Server.open(tmp_path / "b")
    assert b.config.peers == [a.config.url]  # the join's peer, dialed at every start
    with TcpProxy("127.0.0.1", a.config.listen_port) as proxy:
        try:
            await b.start(mesh=True, dial_urls={"a": proxy.url + "/"})
            await wait_until(lambda: b.links.connected_peers() == ["a"])
            assert set(b.mesh.dialers) == {normalise_url(proxy.url)}
            assert [link.target for link in b.links.by_id.values()] == [proxy.url]
            assert proxy.connections_accepted >= 1
            assert b.relays.can_wait()  # still a full mesh: relays may wait

            entry = await a.cluster_admin.create_domain("acme", created_by="admin")
            await wait_until(lambda: "acme" in b.status.domain_heads())
            assert b.status.domain_heads()["acme"]["document-id"] == entry["document-id"]
        finally:
            await b.stop()
            await a.stop()
