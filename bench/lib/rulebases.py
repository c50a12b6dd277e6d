"""Domains with big rulebases, built fast: many rules per publish, by an administrator's
session (an import in chunks), or, for comparison, written straight into the live
document and persisted as if a peer had sent them (the builder before December 5).

Both are local transactions of the server that imports: Automerge edits such a document
more slowly than the same changes loaded or received (bench/README.md, "Why the floor
grew")."""

from __future__ import annotations

import random
from typing import Any

from automerge.core import ROOT

from crdtmds.core import model
from crdtmds.core.docdata import child_id, insert_value, put_value
from lib.credentials import BENCH_ADMIN
from lib.workload import EditGenerator, apply_edit, apply_edits

HOSTS = 50
"""Hosts published first, for the bulk rules to refer to."""


async def build_rule_domain(
    node: Any,
    size: int,
    *,
    seed: int,
    rules_per_change: int,
    other_edits: int = 0,
    direct: bool = False,
    name: str = "",
) -> str:
    """A domain named `name` (``rules-<size>`` by default) whose default layer holds
    `size` rules, over `HOSTS` hosts and `other_edits` random edits (services, groups,
    ...); the rules published `rules_per_change` at a time, or written straight into the
    document with `direct`."""
    name = name or f"rules-{size}"
    await node.cluster_admin.create_domain(name, created_by=BENCH_ADMIN)
    generator = EditGenerator(seed=seed + size, prefix=f"s{size}")
    session = await node.sessions.open(name, admin=BENCH_ADMIN)
    for _ in range(HOSTS):
        apply_edit(session, *generator.add_host())
    apply_edits(session, generator, other_edits)
    await node.sessions.publish(session)
    domain = node.documents.domain(name)
    layer_uid = domain.state.get_layer(None).uid
    rng = random.Random(seed)
    for start in range(0, size, rules_per_change):
        params = [
            {
                "name": f"bulk-{start + i}",
                "source": rng.sample(generator.hosts, 2),
                "destination": [rng.choice(generator.hosts)],
                "action": rng.choice(model.ACTIONS),
                "track": "Log",
                "position": "bottom",
            }
            for i in range(min(rules_per_change, size - start))
        ]
        if direct:
            rules = [model.build_rule(p, domain.state.find_object) for p in params]
            await append_rules(node, domain, layer_uid, rules)
            continue
        for rule in params:
            session.add_rule(rule)
        await node.sessions.publish(session)
    await node.sessions.close(session)
    return name


async def append_rules(node: Any, domain: Any, layer_uid: str, rules: list[Any]) -> None:
    """Append rules to a layer in one change, persisted like a change from a peer (the
    domain's view catches up when a session next opens)."""
    rules_id, order_id = layer_list_ids(domain.doc, layer_uid)
    end = domain.doc.length(order_id)
    before = domain.heads()
    with domain.doc.transaction() as tx:
        for offset, rule in enumerate(rules):
            put_value(tx, rules_id, rule["uid"], rule)
            insert_value(tx, order_id, end + offset, rule["uid"])
    await node.persister.persist_received(domain.document_id, before)


def layer_list_ids(doc: Any, layer_uid: str) -> tuple[bytes, bytes]:
    """The Automerge ids of a layer's rules map and order list."""
    layer_id = child_id(doc, child_id(doc, ROOT, "layers"), layer_uid)
    return child_id(doc, layer_id, "rules"), child_id(doc, layer_id, "order")
