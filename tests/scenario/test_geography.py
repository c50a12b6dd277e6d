"""Sixteen servers in four regions (`crdtmds.testing.geography`): one region is cut off
while administrators keep publishing on every server, on both sides; after the heal
every server holds the same heads and every acknowledged publish."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from crdtmds.client import Client
from crdtmds.testing.geography import GeoCluster
from crdtmds.testing.publishing import Publishers, missing_hosts

pytestmark = pytest.mark.timeout(240)

DOMAIN = "geo"
ADMIN, PASSWORD = "admin", "admin-password"
CUT_REGION = "ap-south"
RATE = 4.0
"""Publishes per second over all servers (the benchmark runs 10/s)."""
BEFORE_SECONDS, CUT_SECONDS, AFTER_SECONDS = 2.0, 8.0, 2.0
WAIT = 60.0
"""Bound of every wait for the cluster (connected, domain everywhere, converged)."""


def test_a_region_cut_off_and_healed_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    with GeoCluster(tmp_path, admin=ADMIN, password=PASSWORD) as geo:
        geo.start()
        asyncio.run(_partition_and_heal(geo))


async def _partition_and_heal(geo: GeoCluster) -> None:
    await geo.wait_connected(WAIT)
    async with Client([geo.urls[0]], user=ADMIN, password=PASSWORD) as admin:
        await admin.call("add-domain", name=DOMAIN)
    await geo.wait_identical_heads(DOMAIN, WAIT)
    publishers = Publishers(geo.urls, DOMAIN, user=ADMIN, password=PASSWORD)
    everyone = list(range(len(geo.servers)))
    island = set(geo.in_region(CUT_REGION))
    rng = random.Random(20)
    try:
        await publishers.login(1)
        await publishers.steadily(RATE, BEFORE_SECONDS, everyone, rng)
        geo.cut(CUT_REGION)
        during = await publishers.steadily(RATE, CUT_SECONDS, everyone, rng)
        statuses = await _every_status(geo)
        geo.heal(CUT_REGION)
        await publishers.steadily(RATE, AFTER_SECONDS, everyone, rng)
    finally:
        await publishers.close()

    # The cut held: no server was linked across it, and both sides published meanwhile.
    names = [server.name for server in geo.servers]
    for index, status in enumerate(statuses):
        side = island if index in island else set(everyone) - island
        assert set(status["peers"]) <= {names[i] for i in side}
    assert {p.server in island for p in during if p.acknowledged} == {True, False}

    heads = await geo.wait_identical_heads(DOMAIN, WAIT)
    assert heads
    assert [p.error for p in publishers.done if p.error] == []
    acknowledged = [p.host for p in publishers.acknowledged()]
    assert len(acknowledged) == int(RATE * BEFORE_SECONDS) + int(RATE * CUT_SECONDS) + int(
        RATE * AFTER_SECONDS
    )
    missing = await missing_hosts(geo.urls, DOMAIN, acknowledged, user=ADMIN, password=PASSWORD)
    assert missing == {}


async def _every_status(geo: GeoCluster) -> list[dict[str, Any]]:
    """Every server's status, asking again those that did not answer (a loaded machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while None in (statuses := await geo.statuses()):
        assert loop.time() < deadline, "a server did not answer its status"
    return [status for status in statuses if status is not None]
