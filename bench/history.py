"""Years of history: the CPU of one publish at its origin and at a receiving server, in a
domain with 1,000 publishes in its history and in one with 20,000, same run.

The domain is the product's layout (objects, a layer, the revision list) with a pool of
200 hosts; each publish sets two fields of one host and appends its revision entry, in
one transaction on the live document (as a publish will, see docs/architecture.md), ten
actors taking turns. The history is built once and kept under `--cache` (bench/results/
history-cache by default) as the change chunks: loading chunks gives a document that
behaves like one built in memory, whereas `Document.load(doc.save())` does not (it is
measured too, as "compacted": a server restarted after compaction holds that).

Cases, measured interleaved (one publish of each per round, order alternating):

- ``full-N``: the document holding all N publishes (today's design);
- ``compacted-N``: the same loaded from `save()` (today's design after a restart);
- ``epoch-N``: the design of `crdtmds.core.epochs`: the document of the epoch started at
  a cut E publishes back (`start_epoch`), holding the E publishes made since; E = 1,000
  is the worst case of an epoch that rolls every 1,000 publishes.

Origin = the publish's transaction + its sync message for one peer; receive = the peer's
`receive_sync_message` (its sync state kept from earlier rounds) and its reply. Target:
``epoch-20000 / full-1000 <= 2`` for both (the week-one domain has no cut yet).

    .venv/bin/python bench/history.py [--sizes 1000,20000] [--epoch 1000] [--reps 40]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from automerge.core import ROOT, Document, SyncState
from lib.command_line import DEFAULT_RESULTS_DIR, base_parser, int_list
from lib.report import print_table, verdict, write_results
from lib.stats import median, ratio

from crdtmds.core.docdata import child_id, insert_value, put_value
from crdtmds.core.domain import Domain
from crdtmds.core.epochs import Cut, start_epoch

POOL = 200
ACTORS = [bytes([0xF0 + i]) + bytes(15) for i in range(10)]
LAYOUT = "v1"  # bump when the workload changes: the cache is keyed by it
TARGET = 2.0


def new_domain() -> Document:
    doc = Domain.create("history", "history").doc
    objects = child_id(doc, ROOT, "objects")
    with doc.transaction() as tx:
        for i in range(POOL):
            host = {"uid": f"h{i}", "type": "host", "name": f"host-{i}",
                    "ipv4-address": "10.0.0.1", "comments": "", "color": "black"}  # fmt: skip
            put_value(tx, objects, f"h{i}", host)
    return doc


def publish(doc: Document, n: int) -> None:
    """Publish number `n`: two fields of one host and the revision entry, one change."""
    objects = child_id(doc, ROOT, "objects")
    revisions = child_id(doc, ROOT, "revisions")
    host = child_id(doc, objects, f"h{n % POOL}")
    heads = [h.hex() for h in doc.get_heads()]
    index = doc.length(revisions)
    entry = {"uid": f"rev-{n:012d}", "admin": "admin", "server": f"server-{n % 3}",
             "session": f"ses-{n:012d}", "published-at": "2026-12-05T08:00:00.000+00:00",
             "comments": "", "heads": heads, "changes": 1}  # fmt: skip
    with doc.transaction() as tx:
        put_value(tx, host, "ipv4-address", f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        put_value(tx, host, "comments", f"publish {n}")
        insert_value(tx, revisions, index, entry)


def publish_many(doc: Document, start: int, stop: int) -> None:
    for n in range(start, stop):
        doc.set_actor(ACTORS[n % len(ACTORS)])
        publish(doc, n)


def chunks(doc: Document) -> bytes:
    return b"".join(change.bytes for change in doc.get_changes([]))


def build_histories(sizes: list[int], epoch: int, cache: Path) -> dict[str, bytes]:
    """Change chunks of the full history at every size, and of the epoch document at
    every size above `epoch`; from the cache when there, else built and kept."""
    wanted = {f"full-{n}": n for n in sizes}
    wanted |= {f"epoch-{n}": n for n in sizes if n > epoch}
    paths = {name: cache / f"{LAYOUT}-{name}.chunks" for name in wanted}
    if all(path.exists() for path in paths.values()):
        return {name: path.read_bytes() for name, path in paths.items()}
    cache.mkdir(parents=True, exist_ok=True)
    built: dict[str, bytes] = {}
    doc, done = new_domain(), 0
    started = time.time()
    for size in sizes:
        if size > epoch:
            publish_many(doc, done, size - epoch)
            done = size - epoch
            cut = Cut(1, "history", tuple(doc.get_heads()))
            fresh = start_epoch(doc, cut)
            publish_many(fresh, done, size)
            built[f"epoch-{size}"] = chunks(fresh)
        publish_many(doc, done, size)
        done = size
        built[f"full-{size}"] = chunks(doc)
        print(f"built {size} publishes ({time.time() - started:.0f} s so far)")
    for name, data in built.items():
        paths[name].write_bytes(data)
    return built


def sync_until_quiet(a: Document, sa: SyncState, b: Document, sb: SyncState) -> None:
    for _ in range(20):
        msg = a.generate_sync_message(sa)
        if msg is not None:
            b.receive_sync_message(sb, msg)
        reply = b.generate_sync_message(sb)
        if reply is not None:
            a.receive_sync_message(sa, reply)
        if msg is None and reply is None:
            return
    raise RuntimeError("sync did not settle")


class Case:
    """An origin and a receiving peer of one document, synced, and their CPU times."""

    def __init__(self, doc: Document, first: int) -> None:
        self.origin, self.peer = doc.fork(), doc.fork()
        self.origin.set_actor(ACTORS[first % len(ACTORS)])
        self.to_peer, self.to_origin = SyncState(), SyncState()
        sync_until_quiet(self.origin, self.to_peer, self.peer, self.to_origin)
        self.next = first
        self.origin_ms: list[float] = []
        self.receive_ms: list[float] = []

    def round(self) -> None:
        start = time.process_time()
        publish(self.origin, self.next)
        message = self.origin.generate_sync_message(self.to_peer)
        self.origin_ms.append((time.process_time() - start) * 1000)
        self.next += 1
        start = time.process_time()
        self.peer.receive_sync_message(self.to_origin, message)
        reply = self.peer.generate_sync_message(self.to_origin)
        self.receive_ms.append((time.process_time() - start) * 1000)
        if reply is not None:
            self.origin.receive_sync_message(self.to_peer, reply)
        sync_until_quiet(self.origin, self.to_peer, self.peer, self.to_origin)


def make_cases(histories: dict[str, bytes], sizes: list[int]) -> dict[str, Case]:
    loaders: dict[str, Callable[[], Document]] = {}
    for name, data in histories.items():
        loaders[name] = lambda data=data: Document.load(data)
        if name.startswith("full-"):
            loaders["compacted-" + name[5:]] = lambda data=data: Document.load(
                Document.load(data).save()
            )
    first = {name: int(name.rsplit("-", 1)[1]) for name in loaders}
    return {name: Case(load(), first[name]) for name, load in sorted(loaders.items())}


def epoch_start_ms(history: bytes) -> float:
    """CPU ms of `start_epoch` on the document of `history` at its heads (median of 5)."""
    doc = Document.load(history)
    cut = Cut(1, "history", tuple(doc.get_heads()))
    times = []
    for _ in range(5):
        start = time.process_time()
        start_epoch(doc, cut)
        times.append((time.process_time() - start) * 1000)
    return median(times)


def run_rounds(cases: dict[str, Case], reps: int) -> None:
    names = list(cases)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            cases[name].round()


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_list, default=[1000, 20000])
    parser.add_argument("--epoch", type=int, default=1000, help="publishes per epoch (E)")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--cache", type=Path, default=DEFAULT_RESULTS_DIR / "history-cache")
    args = parser.parse_args()
    sizes = args.sizes
    histories = build_histories(sizes, args.epoch, args.cache)
    cases = make_cases(histories, sizes)
    run_rounds(cases, args.reps)
    results = {name: {"origin_cpu_ms": median(c.origin_ms), "receive_cpu_ms": median(c.receive_ms),
                      "origin_samples": c.origin_ms, "receive_samples": c.receive_ms}
               for name, c in cases.items()}  # fmt: skip
    print_table(
        f"CPU ms per publish, median of {args.reps} (interleaved)",
        ["case", "origin", "receive"],
        [[n, r["origin_cpu_ms"], r["receive_cpu_ms"]] for n, r in results.items()],
    )
    small, large = sizes[0], sizes[-1]
    base = results[f"full-{small}"]
    ratios: dict[str, Any] = {}
    rows = []
    for label, name in (("today", f"full-{large}"), ("after restart", f"compacted-{large}"),
                        ("epochs", f"epoch-{large}")):  # fmt: skip
        if name not in results:
            continue
        for side in ("origin_cpu_ms", "receive_cpu_ms"):
            value = ratio(results[name][side], base[side])
            ratios[f"{name}/{side}"] = value
            rows.append([label, side.split("_")[0], value, verdict(value, TARGET, at_least=False)])
    title = f"ratio to full-{small} (target <= {TARGET})"
    print_table(title, ["design", "side", "ratio", ""], rows)
    start_ms = epoch_start_ms(histories[f"full-{large}"])
    print(f"\nstarting an epoch from full-{large}: {start_ms:.1f} ms CPU on each server, "
          f"{start_ms / args.epoch:.3f} ms per publish over an epoch of {args.epoch}")  # fmt: skip
    ratios["epoch_start_cpu_ms"] = start_ms
    write_results(
        args.out,
        "history",
        parameters={"sizes": sizes, "epoch": args.epoch, "reps": args.reps, "pool": POOL},
        results={"cases": results, "ratios": ratios},
        targets={"epoch / full-smallest": f"<= {TARGET}"},
    )


if __name__ == "__main__":
    main()
