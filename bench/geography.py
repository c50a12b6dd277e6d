"""Geography: 16 servers in 4 regions, publishes spread over all of them, a region cut off
for 30 s and healed.

The cluster is `crdtmds.testing.geography.GeoCluster`: real ``crdtmds start`` processes
on loopback, every server dialing every other one through a delay proxy of its own
(about 1 ms one way inside a region, 20 to 150 ms between regions), full mesh kept. The
administrators' clients and this process's observers (one automerge-repo connection per
server, keeping the change graph only: `lib.observers.GraphPeer`) reach the servers
directly, so an observer sees when a change reached its server.

Three phases, publishing at ``--rate`` on servers drawn at random from all of them:

1. steady (``--steady`` s): publish -> visible on every server, per publish, from the
   moment its ``publish`` command is sent until the last server holds its change;
2. partition (``--partition`` s): the region ``--cut`` (default ap-south, the farthest)
   is cut off (its proxies drop and refuse), both sides keep publishing;
3. healed (``--after`` s): publishing goes on. Convergence after the heal is the time
   from the heal until every server holds every change acknowledged before it.

Then publishing stops; every server must reach identical heads, and every acknowledged
publish (one host each) must be on every server.

Targets (issue 20): p99 publish -> visible everywhere <= the largest one-way delay
+ 100 ms; converged within 5 s of the heal; 0 acknowledged publishes lost.

    .venv/bin/python bench/geography.py [--rate 10] [--steady 30] [--partition 30]
        [--after 10] [--cut ap-south] [--per-region 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.command_line import base_parser, run
from lib.credentials import BENCH_ADMIN, BENCH_PASSWORD, admin_login_query
from lib.observers import arrival_times, start_observer
from lib.report import print_table, verdict, write_results
from lib.resources import cpu_seconds, machine_busy_seconds, run_queue_seconds
from lib.stats import ratio, summary
from lib.sync_peer import SyncPeer

from crdtmds.client import Client
from crdtmds.testing.geography import GeoCluster, Geography
from crdtmds.testing.publishing import Publish, Publishers, missing_hosts

NAME = "geography"
DOMAIN = "geography"
CLIENTS_PER_SERVER = 2
TARGET_MARGIN = 0.100
"""p99 publish -> visible everywhere may exceed the largest one-way delay by this."""
TARGET_CONVERGED = 5.0
WAIT = 120.0


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10.0, help="publishes per second (10)")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds before the cut")
    parser.add_argument("--partition", type=float, default=30.0, help="seconds cut off (30)")
    parser.add_argument("--after", type=float, default=10.0, help="seconds after the heal")
    parser.add_argument("--cut", default="ap-south", help="the region cut off")
    parser.add_argument("--per-region", type=int, default=4, help="servers per region (4)")
    parser.add_argument("--start-arg", action="append", default=[], help="extra start option")
    return parser.parse_args()


@dataclass(slots=True)
class Observers:
    """When each change reached each server (one `GraphPeer` per server)."""

    seen: list[dict[bytes, float]] = field(default_factory=list)
    peers: list[SyncPeer] = field(default_factory=list)

    async def attach(self, urls: list[str], document_id: str) -> None:
        for index, url in enumerate(urls):
            peer = await start_observer(
                "graph", url, document_id, query=admin_login_query(), name=f"observer-{index}"
            )
            self.seen.append(arrival_times(peer, document_id))
            self.peers.append(peer)

    def everywhere(self, change: bytes) -> float | None:
        """When the last server got `change`, or None while one has not."""
        times = [seen.get(change) for seen in self.seen]
        return None if None in times else max(t for t in times if t is not None)

    async def wait_all(self, publishes: list[Publish], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(self.everywhere(p.change) is None for p in publishes if p.change):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        await asyncio.gather(*(peer.close() for peer in self.peers))


@dataclass(slots=True)
class ServerUse:
    """CPU seconds the servers used, and seconds their event loops waited for a CPU
    (runnable, not running: the machine's other load), from `since` to `stop`."""

    pids: list[int]
    wall: float
    cpu: float
    waited: float
    machine: float
    """CPU seconds the whole machine was busy (every process, every core)."""
    here: float
    """CPU seconds of this process (clients, observers, proxies)."""

    @classmethod
    def since(cls, pids: list[int]) -> ServerUse:
        return cls(
            pids, -time.perf_counter(), -cpu_seconds(pids), -run_queue_seconds(pids),
            -machine_busy_seconds(), -time.process_time(),
        )  # fmt: skip

    def stop(self) -> None:
        self.wall += time.perf_counter()
        self.cpu += cpu_seconds(self.pids)
        self.waited += run_queue_seconds(self.pids)
        self.machine += machine_busy_seconds()
        self.here += time.process_time()

    def figures(self) -> dict[str, float]:
        return {
            "wall_seconds": self.wall,
            "cpu_seconds": self.cpu,
            "waited_seconds": self.waited,
            "machine_busy_seconds": self.machine,
            "other_processes_cpu_seconds": self.machine - self.cpu - self.here,
        }


async def domain_document_id(geo: GeoCluster) -> str:
    statuses = await geo.statuses()
    assert statuses[0] is not None
    return str(statuses[0]["domains"][DOMAIN]["document-id"])


async def measure(args: argparse.Namespace, geo: GeoCluster) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    await geo.wait_connected(WAIT)
    connected = time.perf_counter() - started
    async with Client([geo.urls[0]], user=BENCH_ADMIN, password=BENCH_PASSWORD) as admin:
        await admin.call("add-domain", name=DOMAIN)
    await geo.wait_identical_heads(DOMAIN, WAIT)
    observers = Observers()
    publishers = Publishers(geo.urls, DOMAIN, user=BENCH_ADMIN, password=BENCH_PASSWORD)
    pids = [server.process.pid for server in geo.servers if server.process]
    everyone = list(range(len(geo.servers)))
    rng = random.Random(args.seed)
    try:
        await observers.attach(geo.urls, await domain_document_id(geo))
        await publishers.login(CLIENTS_PER_SERVER)
        steady_use = ServerUse.since(pids)
        bench_before = time.process_time()
        steady = await publishers.steadily(args.rate, args.steady, everyone, rng)
        await observers.wait_all(steady, WAIT)
        steady_use.stop()
        bench_cpu = time.process_time() - bench_before
        geo.cut(args.cut)
        cut_at = time.perf_counter()
        cut_use = ServerUse.since(pids)
        during = await publishers.steadily(args.rate, args.partition, everyone, rng)
        cut_use.stop()
        geo.heal(args.cut)
        healed_at = time.perf_counter()
        heal_use = ServerUse.since(pids)
        relinked = asyncio.create_task(first_link_across(geo, args.cut))
        after = await publishers.steadily(args.rate, args.after, everyone, rng)
        all_seen = await observers.wait_all([*steady, *during, *after], WAIT)
        heal_use.stop()
    finally:
        await publishers.close()
        await observers.close()
    heads_started = time.perf_counter()
    await geo.wait_identical_heads(DOMAIN, WAIT)
    identical_after_stop = time.perf_counter() - heads_started
    acknowledged = publishers.acknowledged()
    missing = await missing_hosts(
        geo.urls, DOMAIN, [p.host for p in acknowledged], user=BENCH_ADMIN, password=BENCH_PASSWORD
    )
    before_heal = [p for p in [*steady, *during] if p.change]
    return {
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "connected_seconds": connected,
        "steady": latencies(steady, observers),
        "steady_servers": steady_use.figures(),
        "steady_servers_cpu_per_second": ratio(steady_use.cpu, steady_use.wall),
        "steady_servers_cpu_ms_per_publish": 1000 * ratio(steady_use.cpu, len(steady)),
        "cut_servers": cut_use.figures(),
        "cut_servers_cpu_ms_per_publish": 1000 * ratio(cut_use.cpu, len(during)),
        "after_heal_servers": heal_use.figures(),
        "steady_bench_cpu_per_second": ratio(bench_cpu, args.steady),
        "partition_seconds": healed_at - cut_at,
        "published_during_cut": {
            "island": sum(1 for p in during if p.change and p.server in geo.in_region(args.cut)),
            "rest": sum(1 for p in during if p.change and p.server not in geo.in_region(args.cut)),
        },
        "converged_after_heal_seconds": converged_after(before_heal, observers, healed_at),
        "converged_after_heal_per_server_seconds": [
            converged_after(before_heal, observers, healed_at, server)
            for server in range(len(geo.servers))
        ],
        "first_link_across_after_heal_seconds": await relinked - healed_at,
        "after_heal": latencies(after, observers),
        "all_seen_by_observers": all_seen,
        "identical_heads_after_stop_seconds": identical_after_stop,
        "publishes": len(publishers.done),
        "acknowledged": len(acknowledged),
        "errors": [p.error for p in publishers.done if p.error][:5],
        "lost": sum(len(names) for names in missing.values()),
        "servers_missing_some": len(missing),
    }


def latencies(publishes: list[Publish], observers: Observers) -> dict[str, Any]:
    """Publish sent -> visible on every server, in seconds."""
    values = []
    for publish in publishes:
        seen = observers.everywhere(publish.change) if publish.change else None
        if seen is not None:
            values.append(seen - publish.sent)
    acks = [p.acknowledged - p.sent for p in publishes if p.acknowledged]
    return {**summary(values), "not_seen": len(publishes) - len(values), "ack": summary(acks)}


async def first_link_across(geo: GeoCluster, region: str) -> float:
    """When a connection between `region` and another one is forwarded again."""
    while not any(link.transports for link in geo.crossing(region)):
        await asyncio.sleep(0.01)
    return time.perf_counter()


def converged_after(
    publishes: list[Publish], observers: Observers, healed_at: float, server: int | None = None
) -> float:
    """Seconds from the heal until the last server (or `server`) got the last of
    `publishes`."""
    if server is None:
        times = [observers.everywhere(p.change) for p in publishes]
    else:
        times = [observers.seen[server].get(p.change) for p in publishes]
    if any(t is None for t in times):
        return float("nan")
    return max(0.0, max(t for t in times if t is not None) - healed_at)


def report(args: argparse.Namespace, geo: GeoCluster, result: dict[str, Any]) -> None:
    largest = geo.geography.largest_delay()
    steady, after = result["steady"], result["after_heal"]
    print_table(
        f"Publish -> visible on all {len(geo.servers)} servers, ms ({args.rate:g}/s over all"
        " servers)",
        ["phase", "publishes", "p50", "p95", "p99", "max", "ack p50", "not seen"],
        [
            [name, r["count"], r["p50"] * 1e3, r["p95"] * 1e3, r["p99"] * 1e3, r["max"] * 1e3,
             r["ack"]["p50"] * 1e3, r["not_seen"]]
            for name, r in (("steady", steady), ("after the heal", after))
        ],
    )  # fmt: skip
    converged = result["converged_after_heal_seconds"]
    print_table(
        f"Region {args.cut} cut off for {result['partition_seconds']:.1f} s",
        ["figure", "measured", "target", "verdict"],
        [
            ["p99 publish -> visible everywhere, ms", steady["p99"] * 1e3,
             (largest + TARGET_MARGIN) * 1e3,
             verdict(steady["p99"], largest + TARGET_MARGIN, at_least=False)],
            ["converged after the heal, s", converged, TARGET_CONVERGED,
             verdict(converged, TARGET_CONVERGED, at_least=False)],
            ["acknowledged publishes lost", result["lost"], 0,
             verdict(result["lost"], 0, at_least=False)],
        ],
    )  # fmt: skip
    per_server = result["converged_after_heal_per_server_seconds"]
    island = geo.in_region(args.cut)
    relinked = result["first_link_across_after_heal_seconds"]
    print(
        f"\nafter the heal: first link across {relinked:.2f} s;"
        f" converged, s: island {[round(per_server[i], 2) for i in island]},"
        f" others {[round(t, 2) for i, t in enumerate(per_server) if i not in island]}"
    )
    for phase in ("steady", "cut", "after_heal"):
        use = result[f"{phase}_servers"]
        print(
            f"{phase}: {use['wall_seconds']:.1f} s, the servers used {use['cpu_seconds']:.1f}"
            f" s of CPU and their event loops waited {use['waited_seconds']:.1f} s for one;"
            f" other processes used {use['other_processes_cpu_seconds']:.1f} s"
        )
    during = result["published_during_cut"]
    print(
        f"\nacknowledged {result['acknowledged']} of {result['publishes']} publishes"
        f" ({during['island']} on the island and {during['rest']} elsewhere during the cut);"
        f" errors {result['errors']}; identical heads"
        f" {result['identical_heads_after_stop_seconds']:.1f} s after publishing stopped;"
        f" servers' CPU {result['steady_servers_cpu_per_second']:.2f}"
        f" s/s ({result['steady_servers_cpu_ms_per_publish']:.0f} ms per publish) and this"
        f" process's {result['steady_bench_cpu_per_second']:.2f} s/s while steady;"
        f" all connected {result['connected_seconds']:.1f} s after start; load average"
        f" {result['load_average_1min'][0]:.1f} before and {result['load_average_1min'][1]:.1f}"
        f" after (the machine has {os.cpu_count()} cores)"
    )
    write_results(
        args.out,
        NAME,
        parameters=vars(args),
        results=result,
        targets={
            "p99_seconds_at_most": largest + TARGET_MARGIN,
            "converged_after_heal_seconds_at_most": TARGET_CONVERGED,
            "lost": 0,
        },
    )


async def benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-geography-") as tmp:
        start_args = ("--log-level", "warning", *args.start_arg)
        geography = Geography(servers_per_region=args.per_region)
        with GeoCluster(
            Path(tmp), geography, admin=BENCH_ADMIN, password=BENCH_PASSWORD, start_args=start_args
        ) as geo:
            print(f"starting {len(geo.servers)} servers ...", flush=True)
            geo.start()
            result = await measure(args, geo)
            report(args, geo, result)


def main() -> None:
    args = parse_args()
    run(lambda: benchmark(args))


if __name__ == "__main__":
    main()
