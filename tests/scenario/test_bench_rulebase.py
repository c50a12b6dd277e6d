"""The rulebase benchmark's Automerge floor (bench/rulebase_scaling.py) writes only to a
throwaway fork: the live document, its view and storage are as they were."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import rulebase_scaling
from lib.node_dirs import init_node_dir

from crdtmds.server import Server

pytestmark = pytest.mark.timeout(60)


async def test_automerge_floor_leaves_the_live_domain_alone(tmp_path: Path) -> None:
    await init_node_dir(tmp_path / "node")
    node = await Server.open(tmp_path / "node")
    try:
        args = argparse.Namespace(seed=3, rules_per_change=10)
        name = await rulebase_scaling.build_domain(node, 20, args)
        bench = rulebase_scaling.LayerBench(node, name, seed=3)
        await bench.open()
        await bench.round(read_document=False)
        domain = node.documents.domain(name)
        heads = domain.heads()
        rules = [rule["uid"] for rule in domain.state.rulebase()]

        actor, rule, revision = bench.floor_inputs(domain)
        rulebase_scaling.automerge_floor(domain, actor, rule, revision)

        assert domain.heads() == heads
        assert [r["uid"] for r in domain.state.rulebase()] == rules
        assert rule["uid"] not in rules
        stored = await node.storage.load_document(domain.document_id)
        assert stored is not None and stored.get_heads() == heads
        assert bench.session.actor == actor
    finally:
        await node.close()
