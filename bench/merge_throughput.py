"""Merge throughput: a server ingesting changes from a peer vs the raw Automerge core.

The workload is realistic: domains built by administrator sessions, i.e. publishes that
add hosts, networks, services and rules and modify hosts and rules (default 20,000
changes over 10 domains). In one run, alternating:

(a) the Automerge core alone merges every domain's changes into empty documents, in
    memory (``Document().merge(source)``);
(b) a fresh crdtmds server (a real ``crdtmds start`` process) is sent the same domains
    over WebSockets by an in-process peer that authenticates as a server of its cluster;
    the clock stops when the server announces heads equal to the source's for every
    domain, which it does only once the changes are merged and committed to SQLite.

Target: (b) at no less than half the changes/s of (a).

    .venv/bin/python bench/merge_throughput.py [--changes 20000] [--domains 10] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

from automerge.core import Document
from lib.command_line import base_parser, run
from lib.credentials import server_join_metadata
from lib.node_dirs import init_node_dir, read_node_config
from lib.report import print_table, verdict, write_results
from lib.resources import process_cpu_seconds
from lib.stats import median
from lib.sync_peer import MemoryDocuments, SyncPeer
from lib.timing import Samples, measured, now
from lib.workload import build_domain_documents

from crdtmds.testing.localcluster import LocalServer

NAME = "merge_throughput"
TARGET_RATIO = 0.5


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=20_000, help="changes in all (20000)")
    parser.add_argument("--domains", type=int, default=10, help="domains (default 10)")
    parser.add_argument("--edits-per-publish", type=int, default=10, help="default 10")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per ingest")
    return parser.parse_args()


# ---------------------------------------------------------------- (a) the core in memory


def core_merge(sources: dict[str, Document]) -> list[Document]:
    merged = []
    for source in sources.values():
        target = Document()
        target.merge(source)
        merged.append(target)
    return merged


# ---------------------------------------------------------------- (b) a server over WebSockets


async def server_ingest(
    sources: dict[str, Document], root: Path, repetition: int, timeout: float
) -> dict[str, Any]:
    """Start a fresh server, send it every source domain, time until it has them all."""
    data_dir = root / f"ingest-{repetition}"
    await init_node_dir(data_dir, name=f"ingest-{repetition}")
    config = await read_node_config(data_dir)
    server = LocalServer(name=config["name"], data_dir=data_dir)
    url = server.start(log_level="warning")
    heads = {doc_id: doc.get_heads() for doc_id, doc in sources.items()}
    peer = SyncPeer(
        url,
        MemoryDocuments(sources),
        metadata=server_join_metadata(config, "bench-source"),
        name="bench-source",
    )
    try:
        start = now()
        cpu_start = process_cpu_seconds(server.process.pid)
        await peer.start()
        while not all(peer.server_has(doc_id, h) for doc_id, h in heads.items()):
            if peer.failure:
                raise RuntimeError(f"the server dropped the connection: {peer.failure}")
            if now() - start > timeout:
                raise TimeoutError(f"the server did not ingest everything in {timeout} s")
            peer.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.progress.wait(), 1.0)
        seconds = now() - start
        server_cpu = process_cpu_seconds(server.process.pid) - cpu_start
    finally:
        await peer.close()
        server.stop()
    return {
        "seconds": seconds,
        "server_cpu_seconds": server_cpu,
        "frames_from_server": peer.frames_received,
        "database_bytes": sum(f.stat().st_size for f in data_dir.glob("crdtmds.sqlite3*")),
    }


# ---------------------------------------------------------------- the run


async def benchmark(args: argparse.Namespace) -> None:
    per_domain = max(1, args.changes // args.domains)
    print(f"building {args.domains} domains of {per_domain} changes ...", flush=True)
    start = now()
    sources = build_domain_documents(
        args.domains, per_domain, edits_per_publish=args.edits_per_publish, seed=args.seed
    )
    total = sum(len(doc.get_changes([])) for doc in sources.values())
    print(f"{total} changes built in {now() - start:.1f} s", flush=True)
    core = Samples()
    ingests: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-merge-") as tmp:
        for repetition in range(args.reps):
            core.add(await measured(lambda: core_merge(sources)))
            ingests.append(await server_ingest(sources, Path(tmp), repetition, args.timeout))
            print(
                f"  rep {repetition + 1}: core {core.wall[-1]:.3f} s,"
                f" server {ingests[-1]['seconds']:.3f} s",
                flush=True,
            )
    report(args, total, core, ingests)


def report(
    args: argparse.Namespace, total: int, core: Samples, ingests: list[dict[str, Any]]
) -> None:
    core_seconds = median(core.wall)
    server_seconds = median([i["seconds"] for i in ingests])
    server_cpu = median([i["server_cpu_seconds"] for i in ingests])
    core_rate = total / core_seconds
    server_rate = total / server_seconds
    ratio = server_rate / core_rate
    print_table(
        f"Merge throughput: {total} changes over {args.domains} domains, medians of {args.reps}",
        ["path", "seconds", "changes/s", "cpu seconds"],
        [
            ["(a) Automerge core, in memory", core_seconds, core_rate, median(core.cpu)],
            ["(b) server over WebSockets + SQLite", server_seconds, server_rate, server_cpu],
        ],
    )
    print_table(
        "Ratio b/a (higher is better)",
        ["ratio", "target >=", "verdict"],
        [[ratio, TARGET_RATIO, verdict(ratio, TARGET_RATIO, at_least=True)]],
    )
    write_results(
        args.out,
        NAME,
        parameters=vars(args),
        results={
            "changes": total,
            "core": {**core.to_json(), "changes_per_second": core_rate},
            "server": {
                "runs": ingests,
                "median_seconds": server_seconds,
                "changes_per_second": server_rate,
            },
            "ratio_server_to_core": ratio,
        },
        targets={"ratio_at_least": TARGET_RATIO},
    )


def main() -> None:
    args = parse_args()
    run(lambda: benchmark(args))


if __name__ == "__main__":
    main()
