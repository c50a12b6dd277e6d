"""Domains loaded on first use, with real server processes: after a reconnect only the
domains that changed are loaded (the others cost nothing), a domain is served right on
its first API call and its first sync with a stock automerge-repo client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cluster import (
    ADMIN,
    PASSWORD,
    ApiClient,
    Cluster,
    create_domain,
    host_names,
    status,
    wait_converged,
)

pytestmark = pytest.mark.timeout(120)
DOMAINS = ("d1", "d2", "d3")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path) as made:
        yield made


async def publish_hosts(url: str, domain: str, names: list[str], *, octet: int = 1) -> None:
    """Publish hosts and log out: a session left open would keep its domain loaded (a
    start restores its draft)."""
    async with ApiClient(url) as api:
        await api.login(domain)
        for index, name in enumerate(names):
            await api.call("add-host", name=name, **{"ipv4-address": f"10.{octet}.0.{index + 1}"})
        await api.call("publish")
        await api.call("logout")


def loaded_by_server(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {s["name"]: (s["domains_loaded"], s["domains_total"]) for s in report["servers"]}


async def test_after_a_reconnect_only_the_changed_domain_is_loaded(cluster: Cluster) -> None:
    a = cluster.init("a")
    b = cluster.join("b", peer=a.url)
    for index, name in enumerate(DOMAINS):
        await create_domain(a.url, name)
        await publish_hosts(a.url, name, [f"first-{name}"], octet=index + 1)
    await wait_converged(a.url, servers=2, domains=set(DOMAINS))

    b.stop()
    a.stop()  # both restart with nothing loaded
    await asyncio.to_thread(a.start)
    await publish_hosts(a.url, "d1", ["while-b-was-down"])
    await asyncio.to_thread(b.start)
    report = await wait_converged(a.url, servers=2, domains=set(DOMAINS))

    # d1 changed: loaded on both (the publish, the sync); d2 and d3 were idle: on neither
    assert loaded_by_server(report) == {"a": (1, 3), "b": (1, 3)}
    assert await host_names(b.url, "d1") == ["first-d1", "while-b-was-down"]
    # an idle domain is loaded on its first API call and served whole
    assert await host_names(b.url, "d2") == ["first-d2"]
    assert loaded_by_server(await status(a.url))["b"] == (2, 3)


async def test_a_stock_repo_client_is_served_an_unloaded_domain(cluster: Cluster) -> None:
    from automerge.repo import Repo
    from automerge.transports import WebSocketClientTransport

    a = cluster.init("a")
    entry = await create_domain(a.url, "idle")
    await publish_hosts(a.url, "idle", ["stored"])
    a.stop()
    await asyncio.to_thread(a.start)
    assert loaded_by_server(await status(a.url))["a"] == (0, 1)

    repo = await Repo.load()
    async with repo:
        transport = await WebSocketClientTransport.connect(
            f"{a.url}/sync?user={ADMIN}&password={PASSWORD}"
        )
        connection = asyncio.create_task(repo.connect(transport))
        try:
            handle = await _find_when_connected(repo, f"automerge:{entry['document-id']}")
            objects = handle.doc()["objects"]
            assert {objects[uid]["name"] for uid in objects} == {"stored"}
        finally:
            await transport.close()
            await asyncio.wait_for(asyncio.gather(connection, return_exceptions=True), 10)
    assert loaded_by_server(await status(a.url))["a"] == (1, 1)


async def _find_when_connected(repo: Any, doc_url: str) -> Any:
    for _ in range(100):
        handle = await asyncio.wait_for(repo.find(doc_url), 10)
        if handle is not None:
            return handle
        await asyncio.sleep(0.1)
    raise AssertionError(f"the repo client never found {doc_url}")
