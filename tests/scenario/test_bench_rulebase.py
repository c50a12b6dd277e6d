"""The rulebase benchmark's floor (bench/rulebase_scaling.py) is a real publish of the best
pattern: one change on the live document by an actor it holds, durable in storage, and
the domain's view says what the document holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import rulebase_scaling
from lib.node_dirs import init_node_dir

from crdtmds.core.docdata import read
from crdtmds.core.domain_state import DomainState
from crdtmds.server import Server

pytestmark = pytest.mark.timeout(60)


async def test_the_floor_is_a_durable_publish_by_a_held_actor(tmp_path: Path) -> None:
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
        actors = node.sessions.actors.actors

        await bench.floor(domain)

        [change] = domain.doc.get_changes(heads)
        assert change.actor_id in actors  # no new actor: the document held it
        assert node.sessions.actors.actors == actors
        assert domain.state == DomainState.from_plain(read(domain.doc))
        assert domain.state.rulebase()[0]["name"].startswith("floor-")
        stored = await node.storage.load_document(domain.document_id)
        assert stored is not None and stored.get_heads() == domain.heads()
    finally:
        await node.close()
