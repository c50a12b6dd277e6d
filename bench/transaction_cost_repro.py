"""A minimal reproducer, with Automerge alone, of what sets the rulebase floor (for an
upstream report): a transaction's fixed cost grows with the size of the document, while
the cost of each operation in it barely does. One `put` of one root key, in its own
transaction, in documents of 10 to 10,000 rules (each rule a map of eight fields and an
entry of an order list, written 100 rules per transaction, as an import publishes them),
and the same document loaded from its changes (`Document.load`). automerge 0.2.0.dev4
(Automerge core 0.7.2).

    .venv/bin/python bench/transaction_cost_repro.py [--sizes 10,1000,10000] [--reps 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

from automerge.core import ROOT, Document, ObjType, ScalarType

FIELDS = ("name", "source", "destination", "service", "action", "track", "comments", "layer")
PUTS = 20


def build(rules: int) -> Document:
    """A document of `rules` rules written 100 per transaction."""
    doc = Document(bytes.fromhex("ff" * 16))
    with doc.transaction() as tx:
        table = tx.put_object(ROOT, "rules", ObjType.Map)
        order = tx.put_object(ROOT, "order", ObjType.List)
    for start in range(0, rules, 100):
        with doc.transaction() as tx:
            for i in range(start, min(rules, start + 100)):
                uid = f"{i:032x}"
                rule = tx.put_object(table, uid, ObjType.Map)
                for key in FIELDS:
                    tx.put(rule, key, ScalarType.Str, f"{key}-{i}")
                tx.insert(order, i, ScalarType.Str, uid)
    return doc


def one_put_ms(doc: Document, value: int) -> float:
    """CPU ms of a transaction holding a single put."""
    start = time.process_time()
    with doc.transaction() as tx:
        tx.put(ROOT, "counter", ScalarType.Int, value)
    return (time.process_time() - start) * 1000


def many_puts_ms(doc: Document, value: int) -> float:
    """CPU ms of a transaction holding PUTS puts (to tell the operations' own cost)."""
    start = time.process_time()
    with doc.transaction() as tx:
        for i in range(PUTS):
            tx.put(ROOT, f"key-{i}", ScalarType.Int, value)
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="10,1000,10000", help="rules per document, smallest first"
    )
    parser.add_argument("--reps", type=int, default=40, help="transactions per case (40)")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    if len(sizes) < 2 or sizes[0] < 1 or args.reps < 1:
        parser.error("--sizes takes two sizes or more, each at least 1; --reps at least 1")
    docs: dict[tuple[int, str], Document] = {}
    for size in sizes:
        built = build(size)
        docs[(size, "written here")] = built
        docs[(size, "loaded from its changes")] = Document.load(
            b"".join(change.bytes for change in built.get_changes([]))
        )
    one: dict[tuple[int, str], list[float]] = {key: [] for key in docs}
    many: dict[tuple[int, str], list[float]] = {key: [] for key in docs}
    for rep in range(args.reps):  # interleaved, so that the machine's noise hits all alike
        for key, doc in docs.items():
            one[key].append(one_put_ms(doc, rep))
            many[key].append(many_puts_ms(doc, rep))
    print(f"CPU ms per transaction, median of {args.reps}")
    print(
        f"{'rules':>6}  {'document':24}  {'1 put':>7}  {f'{PUTS} puts':>8}  {'per extra put':>13}"
    )
    for (size, how), times in one.items():
        single = statistics.median(times)
        several = statistics.median(many[(size, how)])
        extra = (several - single) / (PUTS - 1)
        print(f"{size:>6}  {how:24}  {single:7.3f}  {several:8.3f}  {extra:13.4f}")
    for how in ("written here", "loaded from its changes"):
        low = statistics.median(one[(sizes[0], how)])
        high = statistics.median(one[(sizes[-1], how)])
        print(f"one-put transaction, {sizes[-1]:,} / {sizes[0]} rules, {how}: {high / low:.1f}x")


if __name__ == "__main__":
    main()
