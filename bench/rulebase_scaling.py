"""Rulebase scaling: what one rule edit costs in layers of 10, 1,000 and 10,000 rules.

One in-process server holds one domain per layer size. For each size, in one run with
interleaved repetitions, an administrator's session:

- adds one access rule and publishes (persisted to SQLite before publish returns);
- moves one rule to another position and publishes;
- reads the whole rulebase (every rule with its number) from the domain's view;

- opens a brand-new session, adds one rule and publishes (its first add + publish);

and, for comparison, the same rulebase is extracted straight from the Automerge document,
and the floor of the best pattern for "add a rule and publish it durably" is timed: one
transaction on the live document, by an actor it already holds, that adds the rule and
appends the revision entry, plus the SQLite INSERT and COMMIT of that change (the
"floor"). Every operation is also printed as a multiple of the floor at its size.
Targets: add + publish at 10,000 rules <= 2x the same at 10 rules, move + publish <=
2.5x, and a brand-new session's first add + publish <= 1.3x a held session's
(administrators of commercial managers report ~90 s per rule change at ~700 rules).

The big layers are written into the live documents directly (many rules per change) and
persisted as received changes, which is much faster than one session edit per rule.

    .venv/bin/python bench/rulebase_scaling.py [--sizes 10,1000,10000] [--reps 15]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path
from typing import Any

from automerge.core import ROOT
from lib.command_line import base_parser, int_list, run
from lib.credentials import BENCH_ADMIN
from lib.node_dirs import init_node_dir
from lib.report import plot, print_table, verdict, write_results
from lib.stats import ratio
from lib.timing import Samples, Timing, measured, now
from lib.workload import EditGenerator, apply_edit, apply_edits

from crdtmds.core import model
from crdtmds.core.docdata import child_id, insert_value, put_value, read
from crdtmds.core.session import revision_entry
from crdtmds.server import Server

NAME = "rulebase_scaling"
TARGET_RATIO = 2.0
MOVE_TARGET_RATIO = 2.5
NEW_SESSION_TARGET = 1.3
STEPS = (
    "add",
    "publish add",
    "move",
    "publish move",
    "new session add + publish",
    "read view",
    "read document",
    "floor",
)


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="10,1000,10000",
        help="comma-separated rule counts per layer (default 10,1000,10000)",
    )
    parser.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    parser.add_argument(
        "--rules-per-change", type=int, default=100, help="rules per change while building"
    )
    parser.add_argument(
        "--document-reads",
        type=int,
        default=3,
        help="repetitions that also extract the rulebase from Automerge (slow: ~1 ms/rule)",
    )
    args = parser.parse_args()
    args.sizes = int_list(args.sizes)
    return args


# ---------------------------------------------------------------- building the layers


async def build_domain(node: Server, size: int, args: argparse.Namespace) -> str:
    """A domain whose default layer holds `size` rules over some hosts and services."""
    name = f"rules-{size}"
    await node.cluster_admin.create_domain(name, created_by=BENCH_ADMIN)
    generator = EditGenerator(seed=args.seed + size, prefix=f"s{size}")
    session = await node.sessions.open(name, admin=BENCH_ADMIN)
    for _ in range(50):
        apply_edit(session, *generator.add_host())
    apply_edits(session, generator, 10)
    await node.sessions.publish(session)
    await node.sessions.close(session)
    domain = node.documents.domain(name)
    objects = domain.state.find_object
    layer_uid = domain.state.get_layer(None).uid
    rng = random.Random(args.seed)
    hosts = generator.hosts
    for start in range(0, size, args.rules_per_change):
        count = min(args.rules_per_change, size - start)
        rules = [
            model.build_rule(
                {
                    "name": f"bulk-{start + i}",
                    "source": rng.sample(hosts, 2),
                    "destination": [rng.choice(hosts)],
                    "action": rng.choice(model.ACTIONS),
                    "track": "Log",
                },
                objects,
            )
            for i in range(count)
        ]
        await append_rules(node, domain, layer_uid, rules)
    return name


async def append_rules(node: Server, domain: Any, layer_uid: str, rules: list[Any]) -> None:
    """Append rules to a layer in one change, persisted like a change from a peer.

    The domain's plain-data view is left alone here: it catches up once, when the
    benchmark's session opens.
    """
    rules_id, order_id = layer_list_ids(domain.doc, layer_uid)
    end = domain.doc.length(order_id)
    before = domain.heads()
    with domain.doc.transaction() as tx:
        for offset, rule in enumerate(rules):
            put_value(tx, rules_id, rule["uid"], rule)
            insert_value(tx, order_id, end + offset, rule["uid"])
    await node.persister.persist_received(domain.document_id, before)


# ---------------------------------------------------------------- one measured round


class LayerBench:
    """One domain and a long-lived session on it, edited once per repetition."""

    def __init__(self, node: Server, domain_name: str, seed: int) -> None:
        self.node = node
        self.domain_name = domain_name
        self.rng = random.Random(seed)
        self.session: Any = None
        self.added = 0

    async def open(self) -> None:
        self.session = await self.node.sessions.open(self.domain_name, admin=BENCH_ADMIN)

    async def round(self, *, read_document: bool) -> dict[str, Timing]:
        """Time each step once (the Automerge extract only with `read_document`)."""
        times: dict[str, Timing] = {}
        self.added += 1
        rule = {"name": f"new-{self.added}", "action": "Accept", "position": "top"}
        times["add"] = await measured(lambda: self.session.add_rule(rule))
        times["publish add"] = await measured(lambda: self.node.sessions.publish(self.session))
        layer = self.session.view.get_layer(None)
        count = len(layer.rules)
        move = {
            "rule-number": self.rng.randint(1, count),
            "new-position": self.rng.randint(1, count),
        }
        times["move"] = await measured(lambda: self.session.set_rule(move))
        times["publish move"] = await measured(lambda: self.node.sessions.publish(self.session))
        times["new session add + publish"] = await self.new_session_add_publish()
        domain = self.node.documents.domain(self.domain_name)
        times["read view"] = await measured(lambda: domain.state.rulebase())
        if read_document:
            times["read document"] = await measured(lambda: read_layer_from_document(domain))
        times["floor"] = await self.floor(domain)
        return times

    async def new_session_add_publish(self) -> Timing:
        """A brand-new session's first add + publish (opening and closing it untimed)."""
        session = await self.node.sessions.open(self.domain_name, admin=BENCH_ADMIN)
        rule = {"name": f"fresh-{self.added}", "action": "Accept", "position": "top"}

        async def add_publish() -> None:
            session.add_rule(rule)
            await self.node.sessions.publish(session)

        timing = await measured(add_publish)
        await self.node.sessions.close(session)
        return timing

    async def floor(self, domain: Any) -> Timing:
        """The best pattern's floor: one transaction on the live document by an actor it
        holds (this server's publishing actor) adding a rule at the top and appending its
        revision entry, then the SQLite INSERT and COMMIT of that change. It is a real
        publish: the domain's view takes the rule afterwards, untimed."""
        node, document_id = self.node, domain.document_id
        state = domain.state
        layer = state.get_layer(None)
        rule = model.build_rule({"name": f"floor-{self.added}", "action": "Accept"},
                                state.find_object)  # fmt: skip
        revision = revision_entry(self.session, domain.heads(), "", 1)
        rules_id, order_id = layer_list_ids(domain.doc, layer.uid)
        revisions_id = child_id(domain.doc, ROOT, "revisions")
        actor = node.sessions.actors.acquire(document_id)

        def write(tx: Any) -> None:
            put_value(tx, rules_id, rule["uid"], rule)
            insert_value(tx, order_id, 0, rule["uid"])
            insert_value(tx, revisions_id, tx.length(revisions_id), revision)

        changes: list[Any] = []

        async def publish() -> None:
            changes.append(domain.write(actor, write))
            await node.storage.append_changes(document_id, changes)

        timing = await measured(publish)
        node.sessions.actors.release(document_id, actor)
        node.persister.note_appended(document_id, changes)
        new_state = state.copy()
        new_state.writable_layer(layer).insert_rule(rule, 0)
        new_state.append_revision(revision)
        domain.adopt_state(new_state)
        return timing


def layer_list_ids(doc: Any, layer_uid: str) -> tuple[bytes, bytes]:
    """The Automerge ids of a layer's rules map and order list."""
    layer_id = child_id(doc, child_id(doc, ROOT, "layers"), layer_uid)
    return child_id(doc, layer_id, "rules"), child_id(doc, layer_id, "order")


def read_layer_from_document(domain: Any) -> list[dict[str, Any]]:
    layers = child_id(domain.doc, ROOT, "layers")
    plain = read(domain.doc, layers)
    layer = next(iter(plain.values()))
    rules = layer["rules"]
    return [rules[uid] for uid in model.effective_order(layer["order"], rules)]


async def benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="crdtmds-bench-rules-") as tmp:
        data_dir = Path(tmp) / "node"
        await init_node_dir(data_dir)
        node = await Server.open(data_dir)
        try:
            benches: dict[int, LayerBench] = {}
            for size in args.sizes:
                start = now()
                name = await build_domain(node, size, args)
                print(f"layer of {size} rules built in {now() - start:.1f} s", flush=True)
                benches[size] = LayerBench(node, name, args.seed + size)
                await benches[size].open()
            samples = {size: {step: Samples() for step in STEPS} for size in args.sizes}
            for repetition in range(args.reps):
                order = args.sizes if repetition % 2 == 0 else args.sizes[::-1]
                for size in order:
                    timings = await benches[size].round(
                        read_document=repetition < args.document_reads
                    )
                    for step, timing in timings.items():
                        samples[size][step].add(timing)
        finally:
            await node.close()
    report(args, samples)


# ---------------------------------------------------------------- report


def combined(first: Samples, second: Samples) -> Samples:
    """Per repetition, the sum of two steps (an edit and its publish)."""
    total = Samples()
    for wall_a, cpu_a, wall_b, cpu_b in zip(
        first.wall, first.cpu, second.wall, second.cpu, strict=True
    ):
        total.add(Timing(wall_a + wall_b, cpu_a + cpu_b))
    return total


def report(args: argparse.Namespace, samples: dict[int, dict[str, Samples]]) -> None:
    medians = step_medians(samples)
    columns = ["add", "publish add", "add + publish", "move", "move + publish"]
    columns += ["new session add + publish", "read view", "read document", "floor"]
    print_table(
        f"Rulebase scaling: median wall ms over {args.reps} interleaved repetitions",
        ["rules", *columns],
        [[size, *(medians[size][c]["wall"] * 1000 for c in columns)] for size in medians],
    )
    multiples = ["add + publish", "move + publish", "new session add + publish"]
    print_table(
        "Each operation as a multiple of the floor at its size (one transaction on the live"
        " document by a held actor + the SQLite commit; median wall)",
        ["rules", "floor ms", *multiples],
        [
            [size, medians[size]["floor"]["wall"] * 1000]
            + [ratio(medians[size][c]["wall"], medians[size]["floor"]["wall"]) for c in multiples]
            for size in medians
        ],
    )
    smallest, largest = min(medians), max(medians)
    ratios = {
        step: {
            clock: ratio(medians[largest][step][clock], medians[smallest][step][clock])
            for clock in ("wall", "cpu")
        }
        for step in ("add + publish", "move + publish", "read view", "floor")
    }
    targets = {"add + publish": TARGET_RATIO, "move + publish": MOVE_TARGET_RATIO}
    print_table(
        f"Cost at {largest} rules relative to {smallest} rules",
        ["operation", "wall ratio", "cpu ratio", "target", "verdict (wall)"],
        [
            [
                step,
                value["wall"],
                value["cpu"],
                targets.get(step, ""),
                verdict(value["wall"], targets[step], at_least=False) if step in targets else "",
            ]
            for step, value in ratios.items()
        ],
    )
    new_vs_held = ratio(
        medians[largest]["new session add + publish"]["wall"],
        medians[largest]["add + publish"]["wall"],
    )
    print(
        f"new session's first add + publish at {largest} rules: {new_vs_held:.2f}x a held"
        f" session's (target <= {NEW_SESSION_TARGET}):"
        f" {verdict(new_vs_held, NEW_SESSION_TARGET, at_least=False)}"
    )
    write_results(
        args.out,
        NAME,
        parameters=vars(args),
        results={
            "median_seconds": {str(size): steps for size, steps in medians.items()},
            "samples_seconds": {
                str(size): {step: values.to_json() for step, values in steps.items()}
                for size, steps in samples.items()
            },
            "ratio_largest_to_smallest": ratios,
            "new_session_to_held_at_largest": new_vs_held,
        },
        targets={
            "add_publish_ratio_at_most": TARGET_RATIO,
            "move_publish_ratio_at_most": MOVE_TARGET_RATIO,
            "new_session_to_held_at_most": NEW_SESSION_TARGET,
        },
    )
    plot_costs(args, medians)


def step_medians(
    samples: dict[int, dict[str, Samples]],
) -> dict[int, dict[str, dict[str, float]]]:
    """Median wall and CPU seconds per size and step, with the add + publish and move +
    publish sums added to `samples`."""
    for steps in samples.values():
        steps["add + publish"] = combined(steps["add"], steps["publish add"])
        steps["move + publish"] = combined(steps["move"], steps["publish move"])
    return {
        size: {step: values.medians() for step, values in steps.items()}
        for size, steps in samples.items()
    }


def plot_costs(args: argparse.Namespace, medians: dict[int, dict[str, dict[str, float]]]) -> None:
    """Median cost of each operation against the size of the layer, log-log."""
    sizes = list(medians)

    def draw(axes: Any) -> None:
        for step in (
            "add + publish",
            "move + publish",
            "read view",
            "read document",
            "floor",
        ):
            values = [medians[size][step]["wall"] * 1000 for size in sizes]
            axes.plot(sizes, values, marker="o", label=step)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("rules in the layer")
        axes.set_ylabel("median ms")
        axes.set_title("Cost of one rule operation vs rulebase size")
        axes.legend()
        axes.grid(True, which="both", alpha=0.3)

    plot(args.out, NAME, draw, enabled=not args.no_plot)


def main() -> None:
    args = parse_args()
    run(lambda: benchmark(args))


if __name__ == "__main__":
    main()
