"""Domains at scale: start-up and memory with many stored domains (loaded on first use),
and what a reconnect after a partition costs.

Four measurements, each side by side in one run:

1. Start-up: a `crdtmds start` process until it listens, with 1,000 stored domains and
   with 10 (interleaved repetitions). Targets: <= 2 s, and <= 1.2x the 10-domain start.
2. Memory: RSS of a server with 1,000 stored domains of which 20 are used (read through
   the API layer), and of one with 20 domains all used; for information, also the
   1,000-domain server with every domain loaded (what every start did before).
   Target: <= 1.5x.
3. Reconnect with 1,000 domains of which 10 changed: two servers, the second stopped
   while the first publishes in 10 domains, then restarted. Counts the domains each
   loaded and the bytes each sent until the 10 domains converged and the link went
   quiet; again with the heads summary switched off (a stock automerge-repo peer's
   behaviour). Target: both proportional to the 10.
4. A 10,000-rule domain, reconnect with k missing changes: bytes on the wire over the
   bytes of those changes, with and without the summary. Target: <= 5x.

    .venv/bin/python bench/domains_scale.py [--domains 1000] [--rules 10000] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.command_line import base_parser, run
from lib.credentials import BENCH_ADMIN
from lib.node_dirs import init_node_dir
from lib.report import print_table, verdict, write_results
from lib.resources import memory_kib
from lib.stats import median, ratio
from lib.workload import EditGenerator, apply_edit, domain_name, publish_edits

from crdtmds.bootstrap import join_cluster
from crdtmds.config import Limits
from crdtmds.net.admission import Admission
from crdtmds.server import Server
from crdtmds.sync.heads_summary import CAPABILITY
from crdtmds.sync.protocol import decode
from crdtmds.testing.localcluster import LocalServer

NAME = "domains_scale"
START_TARGET_SECONDS = 2.0
START_TARGET_RATIO = 1.2
MEMORY_TARGET_RATIO = 1.5
WIRE_TARGET_RATIO = 5.0
QUIET_SECONDS = 1.0


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=1000, help="stored domains (1000)")
    parser.add_argument("--few", type=int, default=10, help="domains of the small store (10)")
    parser.add_argument("--used", type=int, default=20, help="domains in use (20)")
    parser.add_argument("--changed", type=int, default=10, help="domains changed (10)")
    parser.add_argument("--rules", type=int, default=10000, help="rules of the big domain")
    parser.add_argument("--missing", type=int, default=10, help="changes missed (k = 10)")
    parser.add_argument("--rules-per-change", type=int, default=10,
                        help="rules per change while building the big domain (10)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--memory-child", nargs=3, metavar=("DIR", "USED", "LIMIT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    return parser.parse_args()


# ---------------------------------------------------------------- building stores


async def build_store(data_dir: Path, domains: int, seed: int) -> None:
    """A server's data directory with `domains` small domains (two publishes each)."""
    await init_node_dir(data_dir)
    node = await Server.open(data_dir)
    try:
        for index in range(domains):
            name = domain_name(index)
            await node.cluster_admin.create_domain(name, created_by=BENCH_ADMIN)
            generator = EditGenerator(seed=seed + index, prefix=f"d{index}")
            await publish_edits(node, name, generator, publishes=1, edits_per_publish=3)
            if (index + 1) % 200 == 0:
                print(f"  {index + 1}/{domains} domains built", flush=True)
    finally:
        await node.close()


# ---------------------------------------------------------------- 1. start-up


def time_process_start(data_dir: Path) -> float:
    server = LocalServer(name="bench-1", data_dir=data_dir)
    started = time.monotonic()
    server.start(log_level="warning")
    elapsed = time.monotonic() - started
    server.stop()
    return elapsed


async def time_in_process_start(data_dir: Path) -> float:
    """`Server.open` and `start` until it listens, in this process (no interpreter start)."""
    started = time.monotonic()
    server = await Server.open(data_dir)
    await server.start(mesh=False)
    elapsed = time.monotonic() - started
    await server.stop()
    return elapsed


async def measure_startup(many: Path, few: Path, reps: int) -> dict[str, Any]:
    """Process starts and in-process starts, each interleaved, alternating the order."""
    result: dict[str, Any] = {}
    for way in ("process", "in_process"):
        samples: dict[str, list[float]] = {"many": [], "few": []}
        for repetition in range(reps):
            order = ["many", "few"] if repetition % 2 == 0 else ["few", "many"]
            for case in order:
                data_dir = many if case == "many" else few
                if way == "process":
                    samples[case].append(await asyncio.to_thread(time_process_start, data_dir))
                else:
                    samples[case].append(await time_in_process_start(data_dir))
        result[way] = {
            "many_s": samples["many"],
            "few_s": samples["few"],
            "median_many_s": median(samples["many"]),
            "median_few_s": median(samples["few"]),
            "ratio": ratio(median(samples["many"]), median(samples["few"])),
        }
    return result


# ---------------------------------------------------------------- 2. memory


async def memory_child(data_dir: Path, used: int, limit: int) -> dict[str, Any]:
    """Open and start a server, read `used` domains through its API layer; RSS after."""
    node = await Server.open(data_dir, limits=Limits(max_loaded_domains=limit))
    await node.start(mesh=False)
    try:
        names = sorted(node.documents.cluster.domains())[:used]
        for name in names:
            _ = node.documents.domain(name).state.objects_of_type("host")
        rss = memory_kib()["rss"]
        status = node.status.local_status()
    finally:
        await node.stop()
    return {"rss_kib": rss, "loaded": status["domains_loaded"], "total": status["domains_total"]}


def measure_memory_once(data_dir: Path, used: int, limit: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--memory-child", str(data_dir), str(used), str(limit)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_memory(many: Path, used_store: Path, used: int, domains: int) -> dict[str, Any]:
    cases = {
        "many, few used": (many, used, 256),
        "only the used": (used_store, used, 256),
        "many, all loaded": (many, domains, domains + 1),
    }
    result: dict[str, Any] = {}
    for _ in range(2):
        for label, (data_dir, count, limit) in cases.items():
            result.setdefault(label, []).append(measure_memory_once(data_dir, count, limit))
    rss = {label: median([r["rss_kib"] for r in runs]) for label, runs in result.items()}
    return {
        "runs": result,
        "median_rss_kib": rss,
        "ratio": ratio(rss["many, few used"], rss["only the used"]),
        "eager_ratio": ratio(rss["many, all loaded"], rss["only the used"]),
    }


# ---------------------------------------------------------------- 3 and 4. reconnects


class WireCounter:
    """Bytes of the frames a server's hub sends, counted as the links take them: in all,
    and per document the frame is about (sync, request, ephemeral)."""

    def __init__(self, server: Server) -> None:
        self.sent = 0
        self.by_document: dict[str, int] = {}
        self.last_change = time.monotonic()
        original = server.hub.data_to_send

        def counted(conn_id: str) -> list[bytes]:
            frames = original(conn_id)
            for frame in frames:
                self.sent += len(frame)
                document_id = getattr(decode(frame), "document_id", None)
                if document_id is not None:
                    known = self.by_document.get(document_id, 0)
                    self.by_document[document_id] = known + len(frame)
                self.last_change = time.monotonic()
            return frames

        server.hub.data_to_send = counted  # type: ignore[method-assign]


@contextlib.contextmanager
def summary_switched(on: bool) -> Iterator[None]:
    """Servers offer the heads summary, or (off) behave like a plain automerge-repo peer."""
    original = Admission.identity

    def without(self: Admission) -> dict[str, Any]:
        identity = original(self)
        identity.pop(CAPABILITY, None)
        return identity

    if not on:
        Admission.identity = without  # type: ignore[method-assign]
    try:
        yield
    finally:
        Admission.identity = original  # type: ignore[method-assign]


async def make_pair(root: Path, primary_dir: Path) -> tuple[Path, Path]:
    """A copy of `primary_dir` and a second server joined to it, both in sync."""
    a_dir, b_dir = root / "a", root / "b"
    shutil.copytree(primary_dir, a_dir)
    a = await Server.open(a_dir)
    await a.start()
    try:
        await join_cluster(
            b_dir, name="bench-2", listen_host="127.0.0.1", listen_port=0, region="bench",
            peer=a.config.url, secret=a.config.secret, timeout=600,
        )  # fmt: skip
        b = await Server.open(b_dir)
        await b.start()
        await wait_quiet([WireCounter(a), WireCounter(b)], lambda: converged(a, b, None))
        await b.stop()
    finally:
        await a.stop()
    return a_dir, b_dir


def converged(a: Server, b: Server, document_ids: list[str] | None) -> bool:
    ids = document_ids if document_ids is not None else a.documents.domain_ids()
    return all(
        sorted(a.documents.heads_of(d) or []) == sorted(b.documents.heads_of(d) or [])
        for d in ids
    )


async def wait_quiet(counters: list[WireCounter], done: Any, timeout: float = 600) -> float:
    started = time.monotonic()
    while True:
        quiet = all(time.monotonic() - c.last_change > QUIET_SECONDS for c in counters)
        if done() and quiet:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError("the servers did not converge")
        await asyncio.sleep(0.05)


async def reconnect_round(
    a_dir: Path, b_dir: Path, change: Any, *, summary: bool
) -> dict[str, Any]:
    """Start A, let `change(a)` publish while B is down, then start B and count."""
    with summary_switched(summary):
        a = await Server.open(a_dir)
        await a.start()
        try:
            changed, change_bytes = await change(a)
            loads_before = a.documents.loads
            counters = [WireCounter(a)]
            b = await Server.open(b_dir)
            counters.append(WireCounter(b))
            await b.start()
            try:
                await wait_quiet(counters, lambda: converged(a, b, changed))
                return {
                    "changed_domains": len(changed),
                    "change_bytes": change_bytes,
                    "a_loaded_on_reconnect": a.documents.loads - loads_before,
                    "b_loaded_on_reconnect": b.documents.loads,
                    "a_sent": counters[0].sent,
                    "b_sent": counters[1].sent,
                    "bytes": counters[0].sent + counters[1].sent,
                    "changed_domain_bytes": sum(
                        c.by_document.get(d, 0) for c in counters for d in changed
                    ),
                    "b_domains_loaded": b.status.local_status()["domains_loaded"],
                }
            finally:
                await b.stop()
        finally:
            await a.stop()


def publish_in(names: list[str], seed: int) -> Any:
    async def change(a: Server) -> tuple[list[str], int]:
        ids = []
        for index, name in enumerate(names):
            generator = EditGenerator(seed=seed + index, prefix=f"r{seed}-{index}")
            session = await a.sessions.open(name, admin=BENCH_ADMIN)
            apply_edit(session, *generator.add_host())
            await a.sessions.publish(session)
            await a.sessions.close(session)
            ids.append(a.documents.domain(name).document_id)
        return ids, 0

    return change


def missing_changes_in(name: str, k: int, seed: int) -> Any:
    async def change(a: Server) -> tuple[list[str], int]:
        domain = a.documents.domain(name)
        before = domain.heads()
        generator = EditGenerator(seed=seed, prefix=f"k{seed}")
        session = await a.sessions.open(name, admin=BENCH_ADMIN)
        made = 0
        while made < k:
            apply_edit(session, *generator.add_host())
            await a.sessions.publish(session)
            made = len(domain.doc.get_changes(before))
        await a.sessions.close(session)
        changes = domain.doc.get_changes(before)
        return [domain.document_id], sum(len(c.bytes) for c in changes)

    return change


async def build_big_domain(data_dir: Path, rules: int, seed: int, per_change: int) -> str:
    from rulebase_scaling import build_domain

    await init_node_dir(data_dir)
    node = await Server.open(data_dir)
    try:
        options = argparse.Namespace(seed=seed, rules_per_change=per_change)
        return await build_domain(node, rules, options)
    finally:
        await node.close()


# ---------------------------------------------------------------- main


async def main() -> None:
    args = parse_args()
    if args.memory_child:
        data_dir, used, limit = args.memory_child
        print(json.dumps(await memory_child(Path(data_dir), int(used), int(limit))))
        return
    root = Path(tempfile.mkdtemp(prefix="crdtmds-domains-scale-"))
    try:
        results = await measure_all(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(args, results)


async def measure_all(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    many, few, used_store = root / "many", root / "few", root / "used"
    print(f"building stores of {args.domains}, {args.few} and {args.used} domains", flush=True)
    await build_store(many, args.domains, args.seed)
    await build_store(few, args.few, args.seed)
    await build_store(used_store, args.used, args.seed)
    results: dict[str, Any] = {}
    print("1. start-up", flush=True)
    results["startup"] = await measure_startup(many, few, args.reps)
    print("2. memory", flush=True)
    results["memory"] = measure_memory(many, used_store, args.used, args.domains)
    print("3. reconnect, many domains", flush=True)
    a_dir, b_dir = await make_pair(root / "pair", many)
    names = [domain_name(i) for i in range(0, args.domains, max(1, args.domains // args.changed))]
    names = names[: args.changed]
    results["reconnect"] = {
        label: await reconnect_round(a_dir, b_dir, publish_in(names, seed), summary=on)
        for label, on, seed in (("summary", True, 100), ("plain", False, 200))
    }
    big = await build_big_domain(root / "big", args.rules, args.seed, args.rules_per_change)
    a_dir, b_dir = await make_pair(root / "big-pair", root / "big")
    print("4. and 4b. reconnect, big domain, k missing changes", flush=True)
    results["k_sweep"] = {
        str(k): await reconnect_round(
            a_dir, b_dir, missing_changes_in(big, k, 500 + k), summary=True
        )
        for k in sorted({1, args.missing, 5 * args.missing})
    }
    results["big_domain"] = {
        label: await reconnect_round(
            a_dir, b_dir, missing_changes_in(big, args.missing, seed), summary=on
        )
        for label, on, seed in (("summary", True, 300), ("plain", False, 400))
    }
    return results


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    start, inner = results["startup"]["process"], results["startup"]["in_process"]
    print_table(
        f"1. Start-up until listening, median of {args.reps}",
        ["stored domains", "`crdtmds start` s", "Server.open+start s"],
        [[args.domains, start["median_many_s"], inner["median_many_s"]],
         [args.few, start["median_few_s"], inner["median_few_s"]]],
    )
    print(f"   process ratio {start['ratio']:.2f} "
          f"({verdict(start['ratio'], START_TARGET_RATIO, at_least=False)} <= 1.2x); "
          f"{start['median_many_s']:.2f} s "
          f"({verdict(start['median_many_s'], START_TARGET_SECONDS, at_least=False)} <= 2 s); "
          f"in-process ratio {inner['ratio']:.2f}")
    memory = results["memory"]
    print_table(
        "2. RSS (KiB), median of 2 fresh processes",
        ["server", "RSS KiB"],
        [[label, kib] for label, kib in memory["median_rss_kib"].items()],
    )
    print(f"   ratio {memory['ratio']:.2f} "
          f"({verdict(memory['ratio'], MEMORY_TARGET_RATIO, at_least=False)} <= 1.5x); "
          f"every domain loaded: {memory['eager_ratio']:.2f}x")
    for title, key in (("3. Reconnect, many domains", "reconnect"),
                       ("4. Reconnect, big domain", "big_domain")):
        rows = [[label, r["changed_domains"], r["a_loaded_on_reconnect"],
                 r["b_loaded_on_reconnect"], r["a_sent"], r["b_sent"],
                 r["changed_domain_bytes"], r["change_bytes"]]
                for label, r in results[key].items()]
        print_table(title, ["mode", "changed", "A loaded", "B loaded", "A sent B", "B sent B",
                            "of changed docs B", "change B"], rows)
    ratios = {}
    for label, r in results["big_domain"].items():
        ratios[label] = {
            "domain": ratio(r["changed_domain_bytes"], r["change_bytes"]),
            "link": ratio(r["bytes"], r["change_bytes"]),
        }
    results["big_domain_ratios"] = ratios
    wire = ratios["summary"]["domain"]
    print(f"   the domain's bytes / change bytes: {wire:.2f} "
          f"({verdict(wire, WIRE_TARGET_RATIO, at_least=False)} <= 5x); all bytes of the links "
          f"{ratios['summary']['link']:.2f}; plain: {ratios['plain']['domain']:.2f} and "
          f"{ratios['plain']['link']:.2f}")
    print_table(
        "4b. Bytes of a reconnect by missing changes k (summary)",
        ["k", "changes B", "domain B", "links B", "domain / changes"],
        [[k, r["change_bytes"], r["changed_domain_bytes"], r["bytes"],
          ratio(r["changed_domain_bytes"], r["change_bytes"])]
         for k, r in results["k_sweep"].items()],
    )  # fmt: skip
    write_results(
        args.out, NAME, parameters=vars(args), results=results,
        targets={"startup_s": START_TARGET_SECONDS, "startup_ratio": START_TARGET_RATIO,
                 "memory_ratio": MEMORY_TARGET_RATIO, "wire_ratio": WIRE_TARGET_RATIO},
    )  # fmt: skip


if __name__ == "__main__":
    run(main)
