"""In-process servers over the command layer and real sockets on 127.0.0.1.

`node` is a server in a temporary directory with domains `acme` and `globex` and
administrators `root` (superuser), `alice` (read-write on acme), `reader` (read-only on
acme) and `bob` (read-write on globex), their passwords in `tests.helpers.api_doors.
PASSWORDS`; `api` is its command layer with a login throttle of 3 and sessions on `clock`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdtmds.api.dispatch import AdminAPI
from crdtmds.bootstrap import init_cluster
from crdtmds.core import auth
from crdtmds.server import Server
from tests.helpers.api_doors import PASSWORDS, admin_api
from tests.helpers.clock import FakeClock


@pytest.fixture(autouse=True)
def cheap_password_hashes(cheap_password_hashes: None) -> None:
    """Every test here runs with cheap password hashes (tests/conftest.py): the servers
    they start hash and log in a lot, and none of them checks the production cost."""


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Server]:
    await init_cluster(
        tmp_path, name="s1", listen_host="127.0.0.1", listen_port=0, url="ws://127.0.0.1:1",
        region="eu", admin="root", password=PASSWORDS["root"],
    )  # fmt: skip
    node = await Server.open(tmp_path)
    await node.cluster_admin.create_domain("acme", created_by="root")
    await node.cluster_admin.create_domain("globex", created_by="root")
    await node.cluster_admin.add_administrator(
        "alice", PASSWORDS["alice"], domains={"acme": "read-write"}
    )
    await node.cluster_admin.add_administrator(
        "reader", PASSWORDS["reader"], domains={"acme": "read-only"}
    )
    await node.cluster_admin.add_administrator(
        "bob", PASSWORDS["bob"], domains={"globex": "read-write"}
    )
    yield node
    await node.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def api(node: Server, clock: FakeClock) -> AdminAPI:
    return admin_api(node, throttle=auth.LoginThrottle(limit=3), clock=clock)
