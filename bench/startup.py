"""Start-up: loading N stored domains from SQLite vs `Document.load` on the same bytes.

A server is filled in-process with N domains (each a few hundred objects and rules, made
through sessions and published), then, in one run with interleaved repetitions:

- ``Storage.load_all()``: every stored document, read from SQLite and loaded;
- ``Document.load``: the same bytes (read out of the database beforehand) loaded by the
  Automerge core alone, the floor any storage layer can reach;
- ``Server.open``: a whole server start (storage, cluster document, domains, sessions),
  for information.

Both layouts a server meets are measured: the change log as published, and after
compaction (one snapshot per document). Peak RSS per domain is measured in fresh
subprocesses, one per way of loading. Target: load_all at >= 0.8 of the
speed of Document.load, i.e. ``median(Document.load) / median(load_all) >= 0.8``.

    .venv/bin/python bench/startup.py [--domains 50] [--edits 300] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from automerge.core import Document
from lib.command_line import base_parser, run
from lib.node_dirs import init_node_dir
from lib.report import print_table, verdict, write_results
from lib.resources import memory_kib, reset_peak_memory
from lib.stats import ratio
from lib.timing import interleaved
from lib.workload import populate_domains

from crdtmds.config import DATABASE_FILE
from crdtmds.server import Server
from crdtmds.storage import Storage

NAME = "startup"
TARGET_RATIO = 0.8
LAYOUTS = ("change log", "snapshots")


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=50, help="stored domains (default 50)")
    parser.add_argument("--edits", type=int, default=300, help="edits per domain (default 300)")
    parser.add_argument("--publishes", type=int, default=3, help="publishes per domain")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    return parser.parse_args()


# ---------------------------------------------------------------- the stored bytes


def stored_documents(database: Path) -> dict[str, bytes]:
    """Each document's stored bytes as load_all reads them: snapshot, then changes by row."""
    chunks: dict[str, list[bytes]] = {}
    with sqlite3.connect(database) as connection:
        for document_id, data in connection.execute(
            "SELECT document_id, data FROM snapshots AS s"
            " WHERE id = (SELECT max(id) FROM snapshots WHERE document_id = s.document_id)"
        ):
            chunks[document_id] = [data]
        for document_id, data in connection.execute(
            "SELECT document_id, data FROM changes ORDER BY id"
        ):
            chunks.setdefault(document_id, []).append(data)
    return {document_id: b"".join(parts) for document_id, parts in chunks.items()}


async def compact_everything(data_dir: Path) -> None:
    node = await Server.open(data_dir)
    try:
        for document_id in node.documents.document_ids():
            await node.persister.compact(document_id)
    finally:
        await node.close()


# ---------------------------------------------------------------- memory, in a subprocess


async def memory_child(mode: str, data_dir: Path) -> dict[str, Any]:
    """Load every document one way; report RSS before and peak RSS during."""
    database = data_dir / DATABASE_FILE
    blobs = stored_documents(database) if mode == "Document.load" else {}
    storage = await Storage.open(database) if mode == "Storage.load_all" else None
    reset_peak_memory()
    before = memory_kib()
    if mode == "Document.load":
        count = len([Document.load(blob) for blob in blobs.values()])
        after = memory_kib()
    elif storage is not None:
        count = len((await storage.load_all()).documents)
        after = memory_kib()
        await storage.close()
    else:
        node = await Server.open(data_dir)
        for domain in node.documents.domains.values():
            _ = domain.state  # a serving node keeps each domain's plain-data view too
        count = len(node.documents.domains) + 1
        after = memory_kib()
        await node.close()
    return {"mode": mode, "before_kib": before["rss"], "peak_kib": after["peak"], "docs": count}


def measure_memory(mode: str, data_dir: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--memory-child", mode, str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- timing


async def time_layout(data_dir: Path, reps: int) -> dict[str, Any]:
    database = data_dir / DATABASE_FILE
    blobs = list(stored_documents(database).values())
    storage = await Storage.open(database)

    async def open_node() -> None:
        node = await Server.open(data_dir)
        await node.close()

    try:
        loaded = await storage.load_all()
        if loaded.problems or len(loaded.documents) != len(blobs):
            raise SystemExit(f"stored documents did not all load: {loaded.problems}")
        times = await interleaved(
            reps,
            {
                "Document.load": lambda: [Document.load(blob) for blob in blobs],
                "Storage.load_all": storage.load_all,
                "Server.open": open_node,
            },
        )
    finally:
        await storage.close()
    medians = {name: case.medians() for name, case in times.items()}
    return {
        "documents": len(blobs),
        "stored_bytes": sum(len(blob) for blob in blobs),
        "seconds": {name: case.to_json() for name, case in times.items()},
        "median_seconds": medians,
        "ratio": {
            clock: ratio(medians["Document.load"][clock], medians["Storage.load_all"][clock])
            for clock in ("wall", "cpu")
        },
    }


async def benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-startup-") as tmp:
        data_dir = Path(tmp) / "node"
        print(f"building {args.domains} domains of {args.edits} edits each ...", flush=True)
        await init_node_dir(data_dir)
        node = await Server.open(data_dir)
        try:
            made = await populate_domains(
                node,
                args.domains,
                publishes=args.publishes,
                edits_per_publish=max(1, args.edits // args.publishes),
                seed=args.seed,
            )
        finally:
            await node.close()
        layouts: dict[str, Any] = {}
        for layout in LAYOUTS:
            if layout == "snapshots":
                await compact_everything(data_dir)
            result = await time_layout(data_dir, args.reps)
            result["memory"] = {
                mode: measure_memory(mode, data_dir)
                for mode in ("Document.load", "Storage.load_all", "Server.open")
            }
            layouts[layout] = result
    report(args, made, layouts)


def per_domain_kib(memory: dict[str, Any]) -> float:
    return (memory["peak_kib"] - memory["before_kib"]) / max(1, memory["docs"])


def report(args: argparse.Namespace, made: dict[str, int], layouts: dict[str, Any]) -> None:
    rows = []
    for layout, result in layouts.items():
        medians = result["median_seconds"]
        for mode in ("Document.load", "Storage.load_all", "Server.open"):
            rows.append(
                [
                    layout,
                    mode,
                    medians[mode]["wall"] * 1000,
                    medians[mode]["cpu"] * 1000,
                    result["documents"] / medians[mode]["wall"],
                    per_domain_kib(result["memory"][mode]),
                ]
            )
    changes = sum(made.values())
    print_table(
        f"Start-up: {args.domains} domains, {changes} changes, medians of {args.reps} reps",
        ["layout", "loader", "wall ms", "cpu ms", "docs/s", "peak KiB/doc"],
        rows,
    )
    ratio_rows = [
        [
            layout,
            result["ratio"]["wall"],
            result["ratio"]["cpu"],
            TARGET_RATIO,
            verdict(result["ratio"]["wall"], TARGET_RATIO, at_least=True),
        ]
        for layout, result in layouts.items()
    ]
    print_table(
        "Speed of Storage.load_all relative to Document.load (higher is better)",
        ["layout", "wall ratio", "cpu ratio", "target >=", "verdict (wall)"],
        ratio_rows,
    )
    results: dict[str, Any] = {
        layout: {
            **result,
            "peak_kib_per_document": {
                mode: per_domain_kib(memory) for mode, memory in result["memory"].items()
            },
        }
        for layout, result in layouts.items()
    }
    results["changes_per_domain"] = made
    write_results(
        args.out,
        NAME,
        parameters={k: v for k, v in vars(args).items() if k != "memory_child"},
        results=results,
        targets={"load_all_speed_ratio_at_least": TARGET_RATIO},
    )


def main() -> None:
    args = parse_args()
    if args.memory_child:
        mode, data_dir = args.memory_child
        print(json.dumps(run(lambda: memory_child(mode, Path(data_dir)))))
        return
    run(lambda: benchmark(args))


if __name__ == "__main__":
    main()
