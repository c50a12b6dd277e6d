"""A minimal reproducer, with Automerge alone, of the snapshot-load penalty measured by
bench/snapshot_load.py (for an upstream report): a list append in a document loaded from
`save()` costs several times what it costs in the original or in a document loaded from
its changes. automerge 0.2.0.dev4 (Automerge core 0.7.2).

    .venv/bin/python bench/snapshot_load_repro.py
"""

from __future__ import annotations

import os
import time

from automerge.core import ROOT, Document, ObjType, ScalarType

doc = Document()
with doc.transaction() as tx:
    rules = tx.put_object(ROOT, "rules", ObjType.Map)
    order = tx.put_object(ROOT, "order", ObjType.List)
for start in range(0, 10_000, 100):
    with doc.transaction() as tx:
        for i in range(start, start + 100):
            uid = os.urandom(16).hex()
            rule = tx.put_object(rules, uid, ObjType.Map)
            for key in ("name", "action", "track", "comments"):
                tx.put(rule, key, ScalarType.Str, f"{key}-{i}")
            tx.insert(order, i, ScalarType.Str, uid)


def append_ms(d: Document) -> float:
    start = time.perf_counter()
    with d.transaction() as tx:
        tx.insert(order, d.length(order), ScalarType.Str, "new")
    return (time.perf_counter() - start) * 1000


log = b"".join(change.bytes for change in doc.get_changes([]))
CASES = {
    "in memory": doc,
    "load(save())": Document.load(doc.save()),
    "load(changes)": Document.load(log),
}
for name, d in CASES.items():
    append_ms(d)  # first write
    median = sorted(append_ms(d) for _ in range(7))[3]
    print(f"{name:14} append to a 10,000-entry list: {median:.2f} ms")
