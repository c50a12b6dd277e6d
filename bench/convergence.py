"""Convergence latency: publish -> visible on every server, in 3-, 5- and 9-server clusters.

Each cluster is made of real ``crdtmds start`` processes on loopback. Administrators
publish at a steady rate (default 50/s) on randomly chosen servers through the Python API
client (``crdtmds.client.Client``); each publish adds one host. Visibility is observed
without polling: this process keeps one automerge-repo connection (``/sync``, as an
administrator's read-only repo client) to every server, and notes when each change
reaches each server. A publish's latency runs from the moment its ``publish`` command is
sent until the last server holds its changes. The observers keep only each change's hash
and dependencies (``--observer graph``), not a document: applying every change costs this
process CPU that grows with the document's history and that the servers, on the same
machine, would lose (``--observer document`` does that, for comparison). The CPU this
process used while publishing is reported per publish.

With ``--delay-ms D`` every server dials every other through a delay proxy, and bytes
between servers of different regions (``--regions``, default one per server) take D ms
longer each way, to simulate geography.

Receive cost: the CPU per publish of each server is set beside the *receive floor*
(`lib.receive_floor`: decoding a peer's sync message, `receive_sync_message`, four
outgoing sync messages and one SQLite commit, in this process, on a document holding as
many publishes as the domain does halfway through the run). With ``--origins K`` only the
first K servers publish, so the others are pure receivers; ``--prefill N`` publishes N
times (one client, one after the other) before the clock starts, to measure a domain
with a longer history.

Targets: p99 < 50 ms for 5 servers at 50 publishes/s without delay; with a
delay, p99 within one delay plus 50 ms; a receiving server's CPU per publish <= 2x the
receive floor.

    .venv/bin/python bench/convergence.py [--sizes 3,5,9] [--rate 50] [--duration 10]
        [--delay-ms 0] [--regions N] [--observer graph|document] [--origins K]
        [--prefill N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.cluster import BenchCluster, wait_for_status
from lib.command_line import base_parser, int_list, run
from lib.credentials import BENCH_ADMIN, BENCH_PASSWORD, admin_login_query
from lib.observers import add_observer_option, arrival_times, start_observer
from lib.receive_floor import receive_floor_seconds
from lib.report import plot, print_table, verdict, write_results
from lib.resources import cpu_seconds
from lib.stats import ratio, summary
from lib.sync_peer import SyncPeer
from lib.timing import wait_until

from crdtmds.client import Client
from crdtmds.testing.publishing import Publish, Publishers

NAME = "convergence"
DOMAIN = "convergence"
TARGET_P99_SECONDS = 0.050
TARGET_SIZE = 5
TARGET_FLOOR_MULTIPLE = 2.0
CLIENTS_PER_SERVER = 4


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="3,5,9", help="cluster sizes (default 3,5,9)")
    parser.add_argument("--rate", type=float, default=50.0, help="publishes per second (50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--warmup", type=float, default=1.0, help="first seconds not counted")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per link")
    parser.add_argument("--regions", type=int, default=None, help="regions (default: one each)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the rest")
    parser.add_argument("--origins", type=int, default=0, help="servers that publish (0: all)")
    parser.add_argument("--prefill", type=int, default=0, help="publishes before the clock")
    add_observer_option(parser)
    args = parser.parse_args()
    args.sizes = int_list(args.sizes)
    return args


# ---------------------------------------------------------------- observing every server


@dataclass(slots=True)
class Observer:
    """When each change reached each server, as told by one repo connection per server.

    A "graph" observer reads each change's hash and dependencies from the sync messages
    (`lib.observers.GraphPeer`); a "document" observer applies the changes to an Automerge
    document, at a cost that grows with the document's history and is taken from the
    servers on the same machine. A change counts from when its message arrived (graph) or
    was applied (document).
    """

    kind: str = "graph"
    seen: list[dict[bytes, float]] = field(default_factory=list)
    peers: list[SyncPeer] = field(default_factory=list)

    async def attach(self, urls: list[str], document_id: str) -> None:
        for index, url in enumerate(urls):
            name = f"observer-{index + 1}"
            peer = await start_observer(
                self.kind, url, document_id, query=admin_login_query(), name=name
            )
            self.seen.append(arrival_times(peer, document_id))
            self.peers.append(peer)

    def handling_cpu(self) -> float:
        """CPU seconds this process spent on the observers' received frames."""
        return sum(peer.handling_cpu for peer in self.peers)

    def visible_everywhere(self, change: bytes) -> float | None:
        """When the last server got `change`, or None if some server has not yet."""
        times = [seen.get(change) for seen in self.seen]
        return None if None in times else max(times)  # type: ignore[type-var]

    async def close(self) -> None:
        await asyncio.gather(*(peer.close() for peer in self.peers))


# ---------------------------------------------------------------- publishing


# ---------------------------------------------------------------- one cluster


async def domain_document_id(url: str) -> str:
    from crdtmds.status_query import query_status

    status = await query_status(url, timeout=5.0, credentials=(BENCH_ADMIN, BENCH_PASSWORD))
    return str(status["domains"][DOMAIN]["document-id"])


async def wait_domain_everywhere(urls: list[str], timeout: float = 60.0) -> None:
    await wait_for_status(
        urls,
        lambda status: DOMAIN in status.get("domains", {}),
        timeout,
        f"domain {DOMAIN} did not reach every server",
    )


async def run_cluster(size: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    print(f"starting {size} servers ...", flush=True)
    with BenchCluster(
        root / f"cluster-{size}", size, delay_ms=args.delay_ms, regions=args.regions
    ) as cluster:
        cluster.start()
        await cluster.wait_connected()
        urls = cluster.urls
        async with Client([urls[0]], user=BENCH_ADMIN, password=BENCH_PASSWORD) as admin:
            await admin.call("add-domain", name=DOMAIN)
        await wait_domain_everywhere(urls)
        observer = Observer(args.observer)
        publishers = Publishers(
            urls, DOMAIN, user=BENCH_ADMIN, password=BENCH_PASSWORD, host_prefix=f"c{size}"
        )
        try:
            await observer.attach(urls, await domain_document_id(urls[0]))
            await publishers.login(CLIENTS_PER_SERVER)
            await prefill(args, publishers, observer)
            pids = [server.process.pid for server in cluster.servers if server.process]
            cpu = BenchCpu.start(observer, pids)
            publishes = await steady_publishing(size, args, publishers)
            await wait_all_visible(observer, publishes, args.timeout)
            cpu.stop(observer, pids)
        finally:
            await publishers.close()
            await observer.close()
    results = {**summarise(size, args, publishes, observer), **cpu.per_publish(len(publishes))}
    in_domain = args.prefill + len(publishes) // 2
    results["receive_floor_publishes"] = in_domain
    results["receive_floor_ms"] = 1000 * receive_floor_seconds(in_domain)
    origins = min(size, args.origins) if args.origins > 0 else size
    results["receiving_servers"] = list(range(origins, size)) or list(range(size))
    return results


async def prefill(args: argparse.Namespace, publishers: Publishers, observer: Observer) -> None:
    """`--prefill` publishes on the first server, one after the other, all visible
    everywhere before the clock starts."""
    if not args.prefill:
        return
    made = [await publishers.publish(0) for _ in range(args.prefill)]
    await wait_all_visible(observer, made, args.timeout)
    print(f"  {args.prefill} publishes made before the clock", flush=True)


@dataclass(slots=True)
class BenchCpu:
    """CPU time while publishing and waiting, of this process (clients and observers:
    the machine's CPU that the servers under test did not get) and of the servers (all
    of them together: a figure the machine's noise barely moves, unlike latencies)."""

    process: float
    observers: float
    servers: float
    each: list[float]

    @classmethod
    def start(cls, observer: Observer, pids: list[int]) -> BenchCpu:
        each = [-cpu_seconds([pid]) for pid in pids]
        return cls(-time.process_time(), -observer.handling_cpu(), sum(each), each)

    def stop(self, observer: Observer, pids: list[int]) -> None:
        self.each = [start + cpu_seconds([pid]) for start, pid in zip(self.each, pids, strict=True)]
        self.process += time.process_time()
        self.observers += observer.handling_cpu()
        self.servers += cpu_seconds(pids)

    def per_publish(self, publishes: int) -> dict[str, float]:
        return {
            "bench_cpu_seconds": self.process,
            "bench_cpu_ms_per_publish": 1000 * ratio(self.process, publishes),
            "observer_cpu_ms_per_publish": 1000 * ratio(self.observers, publishes),
            "servers_cpu_seconds": self.servers,
            "servers_cpu_ms_per_publish": 1000 * ratio(self.servers, publishes),
            "each_server_cpu_ms_per_publish": [1000 * ratio(c, publishes) for c in self.each],
        }


async def steady_publishing(
    size: int, args: argparse.Namespace, publishers: Publishers
) -> list[Publish]:
    """One publish every 1/rate seconds on a random origin server (open loop)."""
    rng = random.Random(args.seed + size)
    origins = min(size, args.origins) if args.origins > 0 else size
    return await publishers.steadily(args.rate, args.duration, range(origins), rng)


async def wait_all_visible(observer: Observer, publishes: list[Publish], timeout: float) -> None:
    done = [p for p in publishes if p.change]
    with contextlib.suppress(TimeoutError):
        await wait_until(
            lambda: all(observer.visible_everywhere(p.change) is not None for p in done),
            timeout,
            "every publish visible on every server",
        )


def summarise(
    size: int, args: argparse.Namespace, publishes: list[Publish], observer: Observer
) -> dict[str, Any]:
    first = min((p.sent for p in publishes if p.sent), default=0.0)
    counted = [p for p in publishes if p.change and p.sent - first >= args.warmup]
    latencies, from_ack, missing = [], [], 0
    for publish in counted:
        visible = observer.visible_everywhere(publish.change)
        if visible is None:
            missing += 1
            continue
        latencies.append(visible - publish.sent)
        from_ack.append(max(0.0, visible - publish.acknowledged))
    acks = [p.acknowledged - p.sent for p in counted]
    queued = [p.started - p.due for p in counted]
    errors = [p.error for p in publishes if p.error]
    return {
        "servers": size,
        "publishes": len(publishes),
        "counted": len(counted),
        "not_visible_in_time": missing,
        "errors": len(errors),
        "first_errors": errors[:5],
        "achieved_rate": len(publishes) / max(1e-9, _span(publishes)),
        "publish_to_visible": summary(latencies),
        "ack_to_visible": summary(from_ack),
        "publish_ack": summary(acks),
        "queued_before_publish": summary(queued),
        "latencies": latencies,
    }


def _span(publishes: list[Publish]) -> float:
    sent = [p.sent for p in publishes if p.sent]
    return max(sent) - min(sent) if len(sent) > 1 else 0.0


# ---------------------------------------------------------------- report


def target_seconds(args: argparse.Namespace) -> float:
    return TARGET_P99_SECONDS + args.delay_ms / 1000.0


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    print_latency_table(args, results)
    print_table(
        f"CPU per publish, ms: all servers together, this benchmark process"
        f" ({args.observer} observers)",
        ["servers", "all servers", "benchmark process", "its observers"],
        [
            [
                r["servers"],
                r["servers_cpu_ms_per_publish"],
                r["bench_cpu_ms_per_publish"],
                r["observer_cpu_ms_per_publish"],
            ]
            for r in results
        ],
    )
    print_receive_table(args, results)
    target = target_seconds(args)
    verdict_rows = [
        [
            r["servers"],
            r["publish_to_visible"]["p99"] * 1000,
            target * 1000,
            verdict(r["publish_to_visible"]["p99"], target, at_least=False),
        ]
        for r in results
    ]
    print_table(
        f"p99 against the target (the target is set for {TARGET_SIZE} servers)",
        ["servers", "p99 ms", "target < ms", "verdict"],
        verdict_rows,
    )
    stored = [{k: v for k, v in r.items() if k != "latencies"} for r in results]
    for entry, result in zip(stored, results, strict=True):
        entry["latencies_ms"] = [round(x * 1000, 3) for x in result["latencies"]]
    write_results(
        args.out,
        NAME,
        parameters=vars(args),
        results={"clusters": stored},
        targets={"p99_seconds_below": target, "for_servers": TARGET_SIZE, "at_rate": 50},
    )
    plot_latencies(args, results, target)


def print_receive_table(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """Each receiving server's CPU per publish against the receive floor."""
    rows = []
    for r in results:
        receiving = [r["each_server_cpu_ms_per_publish"][i] for i in r["receiving_servers"]]
        worst = max(receiving)
        multiple = ratio(worst, r["receive_floor_ms"])
        met = verdict(multiple, TARGET_FLOOR_MULTIPLE, at_least=False)
        rows.append([
            r["servers"], r["receive_floor_publishes"], len(receiving), min(receiving), worst,
            r["receive_floor_ms"], multiple, met,
        ])  # fmt: skip
    if args.origins:
        origins = f"servers {args.origins + 1} and up only receive"
    else:
        origins = "every server publishes too: each figure includes its own publishes"
    print_table(
        f"CPU per publish of the receiving servers against the receive floor, ms ({origins})",
        ["servers", "publishes in domain", "receivers", "min", "max", "floor", "max / floor",
         "verdict"],
        rows,
    )  # fmt: skip


def print_latency_table(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    rows = []
    for result in results:
        visible = result["publish_to_visible"]
        rows.append(
            [
                result["servers"],
                result["counted"],
                result["achieved_rate"],
                result["queued_before_publish"]["p95"] * 1000,
                result["publish_ack"]["p50"] * 1000,
                visible["p50"] * 1000,
                visible["p95"] * 1000,
                visible["p99"] * 1000,
                visible["max"] * 1000,
                result["not_visible_in_time"] + result["errors"],
            ]
        )
    delay = delay_note(args)
    print_table(
        f"Publish -> visible on every server, ms ({args.rate:g}/s for {args.duration:g} s{delay})",
        [
            "servers",
            "publishes",
            "rate/s",
            "queue p95",
            "ack p50",
            "p50",
            "p95",
            "p99",
            "max",
            "lost/err",
        ],
        rows,
    )


def delay_note(args: argparse.Namespace) -> str:
    return f", {args.delay_ms:g} ms one-way delay between regions" if args.delay_ms else ""


def plot_latencies(args: argparse.Namespace, results: list[dict[str, Any]], target: float) -> None:
    """The distribution of publish -> visible latencies, one curve per cluster size."""
    delay = delay_note(args)

    def draw(axes: Any) -> None:
        for result in results:
            values = sorted(x * 1000 for x in result["latencies"])
            if values:
                fractions = [(i + 1) / len(values) for i in range(len(values))]
                axes.plot(values, fractions, label=f"{result['servers']} servers")
        axes.axvline(target * 1000, color="grey", linestyle="--", label="p99 target")
        axes.set_xlabel("publish -> visible on every server (ms)")
        axes.set_ylabel("fraction of publishes")
        axes.set_title(f"Convergence latency at {args.rate:g} publishes/s{delay}")
        axes.legend()
        axes.grid(True, alpha=0.3)

    plot(args.out, NAME, draw, enabled=not args.no_plot)


async def benchmark(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-convergence-") as tmp:
        for size in args.sizes:
            results.append(await run_cluster(size, args, Path(tmp)))
    report(args, results)


def main() -> None:
    args = parse_args()
    run(lambda: benchmark(args))


if __name__ == "__main__":
    main()
