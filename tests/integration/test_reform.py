"""A server re-forms a domain's live document after bulk publishes of its own
(`Domain.reform`): same changes and heads, durable as before, and publishes go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtmds.bootstrap import init_cluster
from crdtmds.core import domain as domain_module
from crdtmds.server import Server

pytestmark = pytest.mark.timeout(30)


async def test_a_bulk_publish_re_forms_the_live_document_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain_module, "REFORM_MIN_BYTES", 1)  # the first bulk change will do
    await init_cluster(
        tmp_path, name="a", listen_host="127.0.0.1", listen_port=0, url="", region="eu",
        admin="admin", password="reform-test-password",
    )  # fmt: skip
    server = await Server.open(tmp_path)
    try:
        await server.cluster_admin.create_domain("acme", created_by="admin")
        session = await server.sessions.open("acme", admin="admin")
        session.add_object("host", {"name": "one", "ipv4-address": "192.0.2.1"})
        await server.sessions.publish(session)  # small: kept as it is
        domain = server.documents.domain("acme")
        kept = domain.doc
        for index in range(120):  # one change of some 8 KB
            session.add_rule({"name": f"r{index}", "source": ["one"], "position": "bottom"})
        await server.sessions.publish(session)
        assert domain.doc is not kept  # re-formed
        session.add_rule({"name": "after", "position": "top"})
        await server.sessions.publish(session)
        heads, rules = domain.heads(), [r["name"] for r in domain.state.rulebase()]
        assert rules == ["after", *(f"r{index}" for index in range(120))]
    finally:
        await server.close()
    server = await Server.open(tmp_path)
    try:
        domain = server.documents.domain("acme")
        assert domain.heads() == heads
        assert [r["name"] for r in domain.state.rulebase()] == rules
    finally:
        await server.close()
