"""Epochs across real server processes: three servers publishing at once into a domain
that rolls every four publishes converge on the same documents and the same content, lose
no publish (those concurrent with a cut are carried), and a restarted server comes back
with every revision."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.cluster import (
    ApiClient,
    create_domain,
    host_names,
    start_cluster,
    wait_converged,
)

pytestmark = pytest.mark.usefixtures("cheap_password_hashes")

EPOCH = ["--epoch-publishes", "4"]


async def _publish_each(url: str, prefix: str, count: int, octet: int) -> None:
    """`count` publishes of one host each, from one session on `url`."""
    async with ApiClient(url) as api:
        await api.login("acme")
        for index in range(count):
            ip = f"10.{octet}.0.{index + 1}"
            await api.call("add-host", name=f"{prefix}{index}", **{"ipv4-address": ip})
            await api.call("publish")


async def _revisions(url: str) -> list[str]:
    async with ApiClient(url) as api:
        await api.login("acme")
        reply = await api.call("show-revisions", limit=200)
        return [r["uid"] for r in reply["objects"]]


async def test_servers_publishing_through_epoch_cuts_converge_and_lose_nothing(
    tmp_path: Path,
) -> None:
    with start_cluster(tmp_path, 3, start_args=EPOCH) as cluster:
        urls = {name: node.url for name, node in cluster.nodes.items()}
        await create_domain(urls["n1"], "acme")
        await wait_converged(urls["n1"], servers=3, domains={"acme"})
        per_server = 5
        await asyncio.gather(
            *(_publish_each(url, f"{name}-", per_server, i + 1)
              for i, (name, url) in enumerate(sorted(urls.items())))
        )  # fmt: skip
        report = await wait_converged(urls["n1"], servers=3, domains={"acme"})
        expected = sorted(f"{n}-{i}" for n in urls for i in range(per_server))
        for url in urls.values():
            assert await host_names(url, "acme") == expected
        revisions = {name: await _revisions(url) for name, url in urls.items()}
        assert len(set(revisions["n1"])) == 3 * per_server
        assert all(sorted(r) == sorted(revisions["n1"]) for r in revisions.values())
        # 15 publishes, four per epoch at least: the domain has rolled, to the same newest
        # epoch on every server (converged: every epoch's document identical everywhere).
        row = report["domains"]["acme"]
        newest = set(row["epoch-document-id"].values())
        assert len(newest) == 1 and row["document-id"] not in newest, row

        cluster["n2"].stop()
        await _publish_each(urls["n1"], "while-down-", 2, 9)
        cluster["n2"].start()
        await wait_converged(urls["n1"], servers=3, domains={"acme"})
        assert await host_names(urls["n2"], "acme") == sorted(
            [*expected, "while-down-0", "while-down-1"]
        )
        assert sorted(await _revisions(urls["n2"])) == sorted(await _revisions(urls["n1"]))
        # A server joining now fetches every epoch's document and reads the same domain.
        cluster.join("n4", peer=urls["n1"], start_args=EPOCH)
        await wait_converged(urls["n1"], servers=4, domains={"acme"})
        assert await host_names(cluster["n4"].url, "acme") == await host_names(urls["n1"], "acme")
        assert sorted(await _revisions(cluster["n4"].url)) == sorted(await _revisions(urls["n1"]))
