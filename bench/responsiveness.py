"""Responsiveness: `show-status` latency on a server while it reverts a large domain.

One server process holds a domain of N hosts (default 20,000), built in-process before
the server starts: a first publish with one host (the revision reverted to), then the N
hosts written as one change and published. With the server running, one client polls
`show-status` (logged in, so the full status is computed) every ~20 ms on its own
connection while another reverts the domain to its first revision (N hosts deleted),
then back to the bulk revision (N hosts written again). Printed for each revert: its
duration and the p50/p99/max latency of the polls whose wait overlapped it.

    .venv/bin/python bench/responsiveness.py [--hosts 20000] [--code DIR]

`--code DIR` runs the server from another checkout (e.g. /work/main, the code before a
change); the domain is built by this checkout's code (the storage format is the same).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from lib.command_line import base_parser, run
from lib.credentials import BENCH_ADMIN, BENCH_PASSWORD
from lib.node_dirs import init_node_dir
from lib.report import write_results
from lib.stats import percentile

from crdtmds.api_socket import ApiSocket, api_url
from crdtmds.server import Server
from crdtmds.testing.localcluster import LocalServer

NAME = "responsiveness"
DOMAIN = "big"
POLL_INTERVAL = 0.02


def parse_args() -> Any:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20_000, help="hosts in the domain")
    parser.add_argument("--code", type=Path, help="checkout to run the server from")
    return parser.parse_args()


async def build(data_dir: Path, hosts: int) -> None:
    """The domain: a first publish of one host, then `hosts` more in one change."""
    await init_node_dir(data_dir)
    node = await Server.open(data_dir)
    try:
        await node.cluster_admin.create_domain(DOMAIN, created_by=BENCH_ADMIN)
        session = await node.sessions.open(DOMAIN, admin=BENCH_ADMIN)
        session.add_object("host", {"name": "first", "ip-address": "10.0.0.1"})
        await node.sessions.publish(session, "first")
        for i in range(hosts):  # one draft of `hosts` edits, published as one change
            address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            session.add_object("host", {"name": f"h{i}", "ip-address": address})
        await node.sessions.publish(session, "bulk")
        await node.sessions.close(session)
    finally:
        await node.close()


async def measure(url: str) -> dict[str, Any]:
    """Revert to the first revision (20k hosts deleted), then back to the bulk one (20k
    hosts written again), each while `show-status` is polled."""
    url = api_url(url)
    poller, reverter = ApiSocket(timeout=30), ApiSocket(timeout=30)
    login = {"user": BENCH_ADMIN, "password": BENCH_PASSWORD}
    poll_sid = (await poller.request(url, "login", login, None))["sid"]
    sid = (await reverter.request(url, "login", {**login, "domain": DOMAIN}, None))["sid"]
    revisions = (await reverter.request(url, "show-revisions", {}, sid))["objects"]
    by_comment = {r["comments"]: r["uid"] for r in revisions}
    results = {}
    for label, target in (("to empty", "first"), ("to full", "bulk")):
        results[label] = await _timed_revert(poller, poll_sid, reverter, sid, url,
                                             by_comment[target])  # fmt: skip
    await poller.close()
    await reverter.close()
    return results


async def _timed_revert(
    poller: ApiSocket, poll_sid: str, reverter: ApiSocket, sid: str, url: str, target: str
) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []  # (sent at, latency)
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            sent = time.perf_counter()
            await poller.request(url, "show-status", {}, poll_sid)
            samples.append((sent, time.perf_counter() - sent))
            await asyncio.sleep(POLL_INTERVAL)

    polling = asyncio.create_task(poll())
    await asyncio.sleep(0.5)  # a few polls before, for the idle figure
    start = time.perf_counter()
    await reverter.request(url, "revert-to-revision", {"to-revision": target}, sid)
    end = time.perf_counter()
    done.set()
    await polling
    # Every poll whose wait overlapped the revert.
    during = [lat for sent, lat in samples if sent < end and sent + lat > start]
    idle = [lat for sent, lat in samples if sent + lat < start]
    return {
        "revert_s": end - start,
        "polls_during": len(during),
        "p50_ms": 1000 * percentile(during, 50),
        "p99_ms": 1000 * percentile(during, 99),
        "max_ms": 1000 * max(during, default=float("nan")),
        "idle_p50_ms": 1000 * percentile(idle, 50),
    }


async def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="crdtmds-resp-") as tmp:
        data_dir = Path(tmp) / "server"
        t0 = time.perf_counter()
        await build(data_dir, args.hosts)
        print(f"built a domain of {args.hosts} hosts in {time.perf_counter() - t0:.1f} s")
        if args.code is not None:
            code = args.code.resolve()
            os.environ["PYTHONPATH"] = os.pathsep.join([str(code), str(code / "cli")])
        server = LocalServer("server", data_dir)
        t0 = time.perf_counter()
        url = server.start(timeout=300)
        print(f"server started in {time.perf_counter() - t0:.1f} s")
        try:
            result = await measure(url)
        finally:
            server.stop()
    for label, r in result.items():
        print(
            f"revert {label} ({args.hosts} hosts): {r['revert_s']:.2f} s; show-status during "
            f"it ({r['polls_during']} polls): p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} "
            f"ms, max {r['max_ms']:.1f} ms (idle p50 {r['idle_p50_ms']:.1f} ms)"
        )
    write_results(
        args.out,
        NAME,
        parameters={"hosts": args.hosts, "code": str(args.code or "this checkout")},
        results=result,
        targets={"p99_ms": "< 100"},
    )


if __name__ == "__main__":
    run(main)
