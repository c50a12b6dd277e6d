"""Snapshot load: does a server restarted from its compacted store edit as fast as one
that never restarted?

One in-process server (*never restarted*) builds a domain per layer size (default 10 and
10,000 rules, written straight into the document, 100 rules per change) and compacts
each into a snapshot. Its SQLite file is copied (SQLite's online backup) into a second
data directory, and a second in-process server opens that copy: the *restarted* server,
whose documents come from storage as after any restart. In one run, interleaved, with
the order alternating:

- Automerge alone, on the 10,000-rule document: the never-restarted server's document
  (a fork of it), `Document.load(doc.save())`, and the document as the restarted server's
  storage loads it (`Storage.load_document`): the first write (an actor the document
  holds), an insert at the end of the rule order list (a rule added at the bottom), an
  insert at its top, and freeing the document;
- on each server, one session per domain: add a rule at the top + publish, add a rule at
  the bottom + publish (persisted to SQLite before publish returns).

*Ratio* = restarted / never restarted, median over the repetitions. Target: within 1.2x
for every add + publish.

    .venv/bin/python bench/snapshot_load.py [--sizes 10,10000] [--reps 9]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from automerge.core import ROOT, Document
from lib.command_line import base_parser, int_list, run
from lib.credentials import BENCH_ADMIN
from lib.node_dirs import init_node_dir
from lib.report import print_table, verdict, write_results
from lib.rulebases import build_rule_domain, layer_list_ids
from lib.stats import median, ratio
from lib.timing import Samples, Timing, measured, now

from crdtmds.config import DATABASE_FILE
from crdtmds.core import model
from crdtmds.core.docdata import insert_value, put_value
from crdtmds.server import Server
from crdtmds.storage.datadir_lock import LOCK_FILE

NAME = "snapshot_load"
TARGET_RATIO = 1.2
SERVERS = ("never restarted", "restarted")
OPERATIONS = ("add top + publish", "add bottom + publish")
DOCUMENTS = ("in memory", "load(save())", "as storage loads it")
STEPS = ("first write", "insert at end", "insert at top", "free")


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,10000", help="rules per layer (default 10,10000)")
    parser.add_argument("--reps", type=int, default=9, help="interleaved repetitions")
    parser.add_argument("--rules-per-change", type=int, default=100, help="while building")
    args = parser.parse_args()
    args.sizes = int_list(args.sizes)
    return args


# ---------------------------------------------------------------- the two servers


def copy_data_dir(source: Path, target: Path) -> None:
    """A consistent copy of an open server's data directory (its SQLite file by SQLite's
    online backup, the other files as they are), as a restart would find it."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith((DATABASE_FILE, LOCK_FILE)):
            shutil.copy2(path, target / path.name)
    with (
        sqlite3.connect(source / DATABASE_FILE) as src,
        sqlite3.connect(target / DATABASE_FILE) as dst,
    ):
        src.backup(dst)


class RuleSession:
    """One administrator session on one domain of one server, adding rules."""

    def __init__(self, node: Server, domain: str) -> None:
        self.node = node
        self.domain = domain
        self.session: Any = None
        self.added = 0

    async def open(self) -> None:
        self.session = await self.node.sessions.open(self.domain, admin=BENCH_ADMIN)

    async def add_and_publish(self, position: str) -> None:
        self.added += 1
        rule = {"name": f"new-{position}-{self.added}", "action": "Accept", "position": position}
        self.session.add_rule(rule)
        await self.node.sessions.publish(self.session)


# ---------------------------------------------------------------- Automerge alone


async def automerge_steps(held: list[Document], actor: bytes, layer_uid: str) -> dict[str, Timing]:
    """Time the steps of `STEPS` on the one document in `held`, which the last step frees
    (so the caller must hold no other reference to it)."""
    times: dict[str, Timing] = {}
    held[0].set_actor(actor)
    rules_id, order_id = layer_list_ids(held[0], layer_uid)

    def add_rule(at_end: bool) -> None:
        doc = held[0]
        rule = model.build_rule({"name": "probe", "action": "Accept"}, lambda _ref: None)
        index = doc.length(order_id) if at_end else 0
        with doc.transaction() as tx:
            put_value(tx, rules_id, rule["uid"], rule)
            insert_value(tx, order_id, index, rule["uid"])

    times["first write"] = await measured(lambda: _put_root(held[0]))
    times["insert at end"] = await measured(lambda: add_rule(at_end=True))
    times["insert at top"] = await measured(lambda: add_rule(at_end=False))
    times["free"] = await measured(held.clear)
    return times


def _put_root(doc: Document) -> None:
    with doc.transaction() as tx:
        put_value(tx, ROOT, "snapshot-load-probe", 1)


# ---------------------------------------------------------------- the run


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-snapshot-") as tmp:
        first_dir, second_dir = Path(tmp) / "never", Path(tmp) / "restarted"
        await init_node_dir(first_dir)
        never = await Server.open(first_dir)
        restarted: Server | None = None
        try:
            names = {}
            for size in args.sizes:
                start = now()
                names[size] = await build_rule_domain(
                    never, size, seed=args.seed, rules_per_change=args.rules_per_change
                )
                domain = never.documents.domain(names[size])
                await never.persister.compact(domain.document_id)
                print(f"layer of {size} rules built and compacted in {now() - start:.1f} s")
            copy_data_dir(first_dir, second_dir)
            start = now()
            restarted = await Server.open(second_dir)
            print(f"restarted server opened in {now() - start:.1f} s", flush=True)
            nodes = {"never restarted": never, "restarted": restarted}
            return await measure(args, nodes, names)
        finally:
            if restarted is not None:
                await restarted.close()
            await never.close()


async def measure(
    args: argparse.Namespace, nodes: dict[str, Server], names: dict[int, str]
) -> dict[str, Any]:
    sessions = {
        (server, size): RuleSession(node, names[size])
        for server, node in nodes.items()
        for size in args.sizes
    }
    first = {key: Samples() for key in sessions}
    for key, rule_session in sessions.items():
        await rule_session.open()
        first[key].add(await measured(lambda s=rule_session: s.add_and_publish("top")))
    largest = max(args.sizes)
    live = nodes["never restarted"].documents.domain(names[largest])
    document_id, layer_uid = live.document_id, live.state.get_layer(None).uid
    actor = live.doc.get_actor()  # held by the document: no actor renumbering
    storage = nodes["restarted"].storage
    ops = {(key, op): Samples() for key in sessions for op in OPERATIONS}
    raw = {(doc, step): Samples() for doc in DOCUMENTS for step in STEPS}
    for repetition in range(args.reps):
        keys = list(sessions) if repetition % 2 == 0 else list(sessions)[::-1]
        for key in keys:
            for op in OPERATIONS:
                position = "top" if op.startswith("add top") else "bottom"
                ops[key, op].add(
                    await measured(lambda k=key, p=position: sessions[k].add_and_publish(p))
                )
        snapshot = live.doc.save()
        makers = {
            "in memory": live.doc.fork,
            "load(save())": lambda s=snapshot: Document.load(s),
            "as storage loads it": None,
        }
        order = DOCUMENTS if repetition % 2 == 0 else DOCUMENTS[::-1]
        for name in order:
            maker = makers[name]
            held = [maker() if maker else await storage.load_document(document_id)]
            for step, timing in (await automerge_steps(held, actor, layer_uid)).items():
                raw[name, step].add(timing)
    return {"ops": ops, "first": first, "raw": raw}


# ---------------------------------------------------------------- report


def report(args: argparse.Namespace, samples: dict[str, Any]) -> None:
    ops, first, raw = samples["ops"], samples["first"], samples["raw"]
    med = {key: values.medians() for key, values in ops.items()}
    rows, ratios = [], {}
    for size in args.sizes:
        for op in OPERATIONS:
            never = med[("never restarted", size), op]
            again = med[("restarted", size), op]
            value = ratio(again["wall"], never["wall"])
            ratios[f"{size} {op}"] = {"wall": value, "cpu": ratio(again["cpu"], never["cpu"])}
            rows.append([
                size, op, never["wall"] * 1000, again["wall"] * 1000, value,
                ratios[f"{size} {op}"]["cpu"], verdict(value, TARGET_RATIO, at_least=False),
            ])  # fmt: skip
    print_table(
        f"Add + publish, median ms over {args.reps} interleaved repetitions",
        ["rules", "operation", "never restarted", "restarted", "ratio", "cpu ratio", "verdict"],
        rows,
    )
    print_table(
        "First add + publish of a new session (one sample each, new actor included)",
        ["rules", "never restarted", "restarted"],
        [
            [size, *(median(first[server, size].wall) * 1000 for server in SERVERS)]
            for size in args.sizes
        ],
    )
    raw_med = {key: values.medians() for key, values in raw.items()}
    print_table(
        f"Automerge alone at {max(args.sizes)} rules, median ms",
        ["document", *STEPS],
        [[doc, *(raw_med[doc, step]["wall"] * 1000 for step in STEPS)] for doc in DOCUMENTS],
    )
    print(f"target: every add + publish on the restarted server <= {TARGET_RATIO}x never restarted")
    write_results(
        args.out,
        NAME,
        parameters=vars(args),
        results={
            "add_publish_median_seconds": {
                f"{server} {size} {op}": med[(server, size), op]
                for server in SERVERS
                for size in args.sizes
                for op in OPERATIONS
            },
            "ratio_restarted_to_never": ratios,
            "automerge_median_seconds": {f"{d} {s}": raw_med[d, s] for d, s in raw_med},
        },
        targets={"ratio_at_most": TARGET_RATIO},
    )


def main() -> None:
    args = parse_args()
    report(args, run(lambda: benchmark(args)))


if __name__ == "__main__":
    main()
