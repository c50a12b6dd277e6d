"""Domains with big rulebases, built fast: rules written straight into the live document,
many per change, and persisted as if a peer had sent them."""

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
    node: Any, size: int, *, seed: int, rules_per_change: int, other_edits: int = 0
) -> str:
    """A domain named ``rules-<size>`` whose default layer holds `size` rules, over
    `HOSTS` hosts and `other_edits` random edits (services, groups, ...)."""
    name = f"rules-{size}"
    await node.cluster_admin.create_domain(name, created_by=BENCH_ADMIN)
    generator = EditGenerator(seed=seed + size, prefix=f"s{size}")
    session = await node.sessions.open(name, admin=BENCH_ADMIN)
    for _ in range(HOSTS):
        apply_edit(session, *generator.add_host())
    apply_edits(session, generator, other_edits)
    await node.sessions.publish(session)
    await node.sessions.close(session)
    domain = node.documents.domain(name)
    layer_uid = domain.state.get_layer(None).uid
    rng = random.Random(seed)
    for start in range(0, size, rules_per_change):
        rules = [
            model.build_rule(
                {
                    "name": f"bulk-{start + i}",
                    "source": rng.sample(generator.hosts, 2),
                    "destination": [rng.choice(generator.hosts)],
                    "action": rng.choice(model.ACTIONS),
                    "track": "Log",
                },
                domain.state.find_object,
            )
            for i in range(min(rules_per_change, size - start))
        ]
        await append_rules(node, domain, layer_uid, rules)
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
