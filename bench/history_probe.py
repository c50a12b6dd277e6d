"""What grows with the number of publishes: raw Automerge core, one process.

Builds, side by side, domain documents of small publishes (ten actors taking turns; each
publish sets two fields of one host out of a fixed pool, so the content stays the same
size while the history grows) in several layouts, and at each checkpoint measures the
CPU time of one more publish at the origin (its transaction) and at a receiver (its
`receive_sync_message`, the sync state kept from earlier rounds):

- list:  the revision entry appended to a list inside the document (today's layout)
- none:  no revision entry at all (the policy content alone)
- map:   the revision entry put in a map keyed by its uid
- log:   the policy document without revisions, plus a separate revision-log document
         that takes the entry (both transactions and both receives counted)
- epoch: a document holding only the current content of `none`, written in one change

    .venv/bin/python bench/history_probe.py --sizes 1000,5000,20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import lib  # noqa: F401  (puts the checkout on sys.path)
from automerge.core import ROOT, Document, SyncState

from crdtmds.core.docdata import insert_value, put_value, read

POOL = 200
ACTORS = [bytes([i + 1]) * 16 for i in range(10)]


def _revision(n: int) -> dict:
    return {
        "uid": f"{n:08x}-aaaa-bbbb-cccc-{n:012x}",
        "admin": "admin",
        "server": f"server-{n % 3}",
        "session": f"{n:08x}-dddd-eeee-ffff-{n:012x}",
        "published-at": "2026-12-05T08:00:00.000+00:00",
        "comments": "",
        "heads": ["ab" * 32],
        "changes": 1,
    }


def _new_domain(revisions: str) -> Document:
    doc = Document()
    doc.set_actor(b"\x00" * 16)
    with doc.transaction() as tx:
        put_value(tx, ROOT, "name", "probe")
        hosts = {f"h{i}": {"name": f"h{i}", "ipv4-address": "10.0.0.1", "comments": ""}
                 for i in range(POOL)}  # fmt: skip
        put_value(tx, ROOT, "objects", hosts)
        if revisions == "list":
            put_value(tx, ROOT, "revisions", [])
        elif revisions == "map":
            put_value(tx, ROOT, "revisions", {})
    return doc


def _write_host(tx, doc: Document, n: int) -> None:
    objects = doc.get(ROOT, "objects")[1]
    host = doc.get(objects, f"h{n % POOL}")[1]
    put_value(tx, host, "ipv4-address", f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")
    put_value(tx, host, "comments", f"publish {n}")


class Layout:
    """One document layout: how a publish is written, and into which documents."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.docs = [_new_domain(name if name in ("list", "map") else "none")]
        if name == "log":
            log = Document()
            log.set_actor(b"\x00" * 16)
            with log.transaction() as tx:
                put_value(tx, ROOT, "revisions", [])
            self.docs.append(log)

    def publish(self, docs: list[Document], n: int) -> None:
        policy = docs[0]
        rev_list = policy.get(ROOT, "revisions")
        with policy.transaction() as tx:
            _write_host(tx, policy, n)
            if self.name == "list":
                insert_value(tx, rev_list[1], policy.length(rev_list[1]), _revision(n))
            elif self.name == "map":
                put_value(tx, rev_list[1], _revision(n)["uid"], _revision(n))
        if self.name == "log":
            log = docs[1]
            revs = log.get(ROOT, "revisions")[1]
            with log.transaction() as tx:
                insert_value(tx, revs, log.length(revs), _revision(n))


def _epoch_of(doc: Document) -> Document:
    fresh = Document()
    fresh.set_actor(b"\x00" * 16)
    content = read(doc)
    with fresh.transaction() as tx:
        for key, value in content.items():
            put_value(tx, ROOT, key, value)
    return fresh


def _sync(a: Document, sa: SyncState, b: Document, sb: SyncState) -> float:
    """Run the sync protocol a → b until quiet; CPU seconds spent in b's receives."""
    spent = 0.0
    for _ in range(20):
        moved = False
        msg = a.generate_sync_message(sa)
        if msg is not None:
            t = time.process_time()
            b.receive_sync_message(sb, msg)
            spent += time.process_time() - t
            moved = True
        reply = b.generate_sync_message(sb)
        if reply is not None:
            a.receive_sync_message(sa, reply)
            moved = True
        if not moved:
            return spent
    raise RuntimeError("sync did not settle")


def measure(docs: list[Document], publish: Callable[[list[Document], int], None],
            start: int, reps: int) -> tuple[float, float]:  # fmt: skip
    """Median CPU ms of one publish at the origin and of its receive at a peer."""
    origin = [d.fork() for d in docs]
    for d in origin:
        d.set_actor(ACTORS[start % len(ACTORS)])
    peer = [d.fork() for d in docs]
    states = [(SyncState(), SyncState()) for _ in docs]
    for o, p, (so, sp) in zip(origin, peer, states, strict=True):
        _sync(o, so, p, sp)
    tx_ms, rx_ms = [], []
    for r in range(reps):
        t = time.process_time()
        publish(origin, start + r)
        tx_ms.append((time.process_time() - t) * 1000)
        rx = 0.0
        for o, p, (so, sp) in zip(origin, peer, states, strict=True):
            rx += _sync(o, so, p, sp)
        rx_ms.append(rx * 1000)
    return statistics.median(tx_ms), statistics.median(rx_ms)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--layouts", default="list,none,map,log")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    layouts = [Layout(name) for name in args.layouts.split(",")]
    done = 0
    print(f"pid {os.getpid()}; CPU ms, median of {args.reps}; origin tx / receive")
    for size in sizes:
        t0 = time.time()
        for n in range(done, size):
            for layout in layouts:
                for d in layout.docs:
                    d.set_actor(ACTORS[n % len(ACTORS)])
                layout.publish(layout.docs, n)
        done = size
        print(f"-- {size} publishes (built in {time.time() - t0:.0f} s)")
        for layout in layouts:
            tx, rx = measure(layout.docs, layout.publish, size, args.reps)
            print(f"{layout.name:>6}  tx {tx:6.2f}  rx {rx:6.2f}")
            if layout.name == "none":
                epoch = Layout("none")
                epoch.docs = [_epoch_of(layout.docs[0])]
                tx, rx = measure(epoch.docs, epoch.publish, size, args.reps)
                print(f"{'epoch':>6}  tx {tx:6.2f}  rx {rx:6.2f}")
            if layout.name == "list":
                loaded = [Document.load(d.save()) for d in layout.docs]
                tx, rx = measure(loaded, layout.publish, size, args.reps)
                print(f"{'list*':>6}  tx {tx:6.2f}  rx {rx:6.2f}   (*loaded from save())")


if __name__ == "__main__":
    main()
