"""The commands and reply shapes the stock Check Point clients (Python SDK, Ansible
check_point.mgmt, Go SDK, Terraform provider) rely on, through the JSON door of an
in-process server; and access sections edited concurrently on two copies of a domain."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdtmds.api.dispatch import AdminAPI
from crdtmds.bootstrap import init_cluster
from crdtmds.core import sections
from crdtmds.core.docdata import fork_with_actor, new_actor, read
from crdtmds.core.domain import Domain
from crdtmds.core.domain_state import DomainState, layer_from_plain
from crdtmds.core.session import Session
from crdtmds.server import Server
from crdtmds.transports.ws_api import JsonConnection

PASSWORDS = {"root": "root-password", "alice": "alice-password"}


class Admin:
    def __init__(self, connection: JsonConnection) -> None:
        self.connection = connection

    async def send(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps({"id": 1, "command": command, "params": params})
        return json.loads(await self.connection.handle_text(text))

    async def ok(self, command: str, **params: Any) -> dict[str, Any]:
        reply = await self.send(command, params)
        assert "error" not in reply, reply
        return reply["result"]

    async def error(self, command: str, **params: Any) -> str:
        reply = await self.send(command, params)
        assert "result" not in reply, reply
        return reply["error"]["code"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    await init_cluster(
        tmp_path, name="s1", listen_host="127.0.0.1", listen_port=0, url="ws://127.0.0.1:1",
        region="eu", admin="root", password=PASSWORDS["root"],
    )  # fmt: skip
    server = await Server.open(tmp_path)
    await server.cluster_admin.create_domain("acme", created_by="root")
    await server.cluster_admin.add_administrator(
        "alice", PASSWORDS["alice"], domains={"acme": "read-write"}
    )
    yield server
    await server.close()


@pytest.fixture
async def alice(server: Server) -> Admin:
    admin = Admin(JsonConnection(server.api, "192.0.2.1:40000"))
    await admin.ok("login", user="alice", password=PASSWORDS["alice"], domain="acme")
    return admin


def api_of(server: Server) -> AdminAPI:
    return server.api


async def objects_and_rules(admin: Admin) -> None:
    """Ansible's minimal playbook: a host, a network, a group, a service and a rule."""
    await admin.ok("add-host", name="h1", **{"ip-address": "10.0.0.1"})
    await admin.ok("add-network", name="n1", subnet="10.1.0.0", **{"mask-length": 24})
    await admin.ok("add-group", name="g1", members=["h1"])
    await admin.ok("add-service-tcp", name="t8080", port="8080")
    await admin.ok("add-access-rule", layer="Network", position="top", name="r1",
                   source=["g1"], destination=["n1"], service=["t8080"],
                   action="Accept")  # fmt: skip


def names_in(rulebase: list[dict[str, Any]]) -> list[Any]:
    """Rule names, a section as (name, [its rule names])."""
    return [
        (item["name"], [r["name"] for r in item["rulebase"]])
        if item["type"] == "access-section" else item["name"]
        for item in rulebase
    ]  # fmt: skip


# ---------------------------------------------------------------- sessions and tasks


async def test_api_versions_session_and_tasks(alice: Admin) -> None:
    versions = await alice.ok("show-api-versions")
    assert versions["current-version"] in versions["supported-versions"]
    session = await alice.ok("show-session")
    assert session["type"] == "session" and isinstance(session["uid"], str)
    sessions = await alice.ok("show-sessions")
    assert (sessions["from"], sessions["to"], sessions["total"]) == (1, 1, 1)
    assert await alice.ok("keepalive") == {"message": "OK"}
    await alice.ok("add-host", name="h1", **{"ipv4-address": "10.0.0.1"})
    published = await alice.ok("publish")
    assert isinstance(published["task-id"], str) and "tasks" not in published
    empty = await alice.ok("publish", uid=session["uid"])
    for ask in (published["task-id"], [published["task-id"], empty["task-id"]]):
        tasks = (await alice.ok("show-task", **{"task-id": ask, "details-level": "full"}))["tasks"]
        assert tasks and all(t["status"] == "succeeded" for t in tasks)
        assert all(t["progress-percentage"] == 100 and t["task-name"] for t in tasks)
        assert all(isinstance(d["statusDescription"], str) for d in tasks[0]["task-details"])
    assert await alice.error("publish", uid="another-session") == "not_implemented"
    assert await alice.error("show-task", **{"task-id": "nope"}) == "generic_err_object_not_found"


async def test_only_task_commands_reply_with_task_ids(alice: Admin) -> None:
    await objects_and_rules(alice)
    rule = await alice.ok("show-access-rule", name="r1", layer="Network")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("show-host", {"name": "h1"}), ("set-host", {"name": "h1", "comments": "x"}),
        ("show-hosts", {}), ("show-objects", {}), ("show-object", {"uid": rule["uid"]}),
        ("equals", {"type": "host", "params": {"name": "h1"}}),
        ("set-access-rule", {"name": "r1", "layer": "Network", "comments": "y"}),
        ("add-access-section", {"layer": "Network", "name": "S", "position": "bottom"}),
        ("show-access-section", {"name": "S", "layer": "Network"}),
        ("show-access-rulebase", {"name": "Network"}),
        ("show-layer-structure", {"name": "Network"}),
        ("show-changes", {}), ("show-session", {}), ("show-sessions", {}), ("where-used",
        {"name": "h1"}), ("show-api-versions", {}), ("keepalive", {}), ("discard", {}),
    ]  # fmt: skip
    for command, params in calls:
        reply = await alice.ok(command, **params)
        assert "task-id" not in reply and "tasks" not in reply, command


# ---------------------------------------------------------------- equals


async def test_equals_as_the_ansible_modules_call_it(alice: Admin) -> None:
    async def equals(kind: str, **params: Any) -> Any:
        reply = await alice.send("equals", {"type": kind, "params": params})
        return reply["result"]["equals"] if "result" in reply else reply["error"]["code"]

    missing = "generic_err_object_not_found"
    assert await equals("host", name="h1", **{"ip-address": "10.0.0.1"}) == missing
    assert await equals("access-rule", layer="Network", name="r1",
                        **{"search-entire-rulebase": False}) == missing  # fmt: skip
    await objects_and_rules(alice)
    assert await equals("host", name="h1", **{"ip-address": "10.0.0.1"}) is True
    assert await equals("host", name="h1", **{"ip-address": "10.0.0.2"}) is False
    extras = {"ignore-warnings": True, "ignore-errors": False, "details-level": "full"}
    assert await equals("host", name="h1", **{"ip-address": "10.0.0.1"}, **extras) is True
    assert await equals("network", name="n1", subnet="10.1.0.0", **{"mask-length": 24}) is True
    assert await equals("network", name="n1", **{"subnet-mask": "255.255.0.0"}) is False
    assert await equals("group", name="g1", members=["h1"]) is True
    assert await equals("group", name="g1", members=["h1", "n1"]) is False
    assert await equals("group", name="g1", members=["nowhere"]) is False
    assert await equals("service-tcp", name="t8080", port="8080") is True
    assert await equals("host", name="h1", groups=["g1"]) is False  # not kept here
    rule = {"layer": "Network", "name": "r1", "source": ["g1"], "destination": ["n1"],
            "service": ["t8080"], "search-entire-rulebase": False}  # fmt: skip
    assert await equals("access-rule", **rule) is True
    assert await equals("access-rule", **{**rule, "service": ["Any"]}) is False
    assert await equals("access-rule", **rule, action="Drop") is False
    assert await equals("access-layer", name="Network") == "generic_err_invalid_parameter"
    # The rest of the second run of `cp_mgmt_access_rule` with action and position "top".
    shown = await alice.ok("show-access-rule", name="r1", layer="Network")
    assert shown["action"]["name"] == "Accept"
    first = await alice.ok("show-access-rulebase", name="Network", offset=0, limit=1)
    assert first["rulebase"][0]["name"] == "r1" and first["rulebase"][0]["rule-number"] == 1


# ---------------------------------------------------------------- objects


async def test_object_shapes_tags_subnet_mask_and_member_edits(alice: Admin) -> None:
    host = await alice.ok("add-host", name="h1", tags=["dmz"], **{"ipv4-address": "10.0.0.1"})
    assert [t["name"] for t in host["tags"]] == ["dmz"] and host["tags"][0]["type"] == "tag"
    assert isinstance(host["uid"], str)
    net = await alice.ok("add-network", name="n1", subnet4="10.1.0.0",
                         **{"subnet-mask": "255.255.255.0"})  # fmt: skip
    assert (net["mask-length4"], net["subnet-mask"]) == (24, "255.255.255.0")
    await alice.ok("add-host", name="h2", **{"ipv4-address": "10.0.0.2"})
    await alice.ok("add-group", name="g", members=["h1"])
    group = await alice.ok("set-group", name="g", members={"add": ["h2", "n1"]})
    assert [m["name"] for m in group["members"]] == ["h1", "h2", "n1"]
    group = await alice.ok("set-group", name="g", members={"remove": ["h1"]})
    assert [m["name"] for m in group["members"]] == ["h2", "n1"]
    assert await alice.error("set-group", name="g", members={"replace": ["h1"]}) == (
        "generic_err_invalid_parameter"
    )
    tagged = await alice.ok("set-host", name="h1", tags={"add": "web"})
    assert [t["name"] for t in tagged["tags"]] == ["dmz", "web"]
    shown = await alice.ok("show-object", uid=host["uid"])
    assert shown["object"]["name"] == "h1" and shown["object"]["type"] == "host"
    assert await alice.error("show-object", uid="no-such-uid") == "generic_err_object_not_found"


async def test_show_objects_types_filters_and_pages(alice: Admin) -> None:
    for n in range(5):
        await alice.ok("add-host", name=f"web{n}", **{"ipv4-address": f"10.0.0.{n + 1}"})
    await alice.ok("add-service-tcp", name="web-port", port=80)
    everything = await alice.ok("show-objects")
    assert everything["total"] == 6
    hosts = await alice.ok("show-objects", type="host", limit=2, offset=3)
    assert [o["name"] for o in hosts["objects"]] == ["web3", "web4"]
    assert (hosts["from"], hosts["to"], hosts["total"]) == (4, 5, 5)
    assert all(type(hosts[k]) is int for k in ("from", "to", "total"))
    filtered = await alice.ok("show-objects", filter="port", **{"details-level": "uid"})
    assert [o["name"] for o in filtered["objects"]] == ["web-port"]
    counted = await alice.ok("show-hosts", limit=0)
    assert (counted["objects"], counted["total"]) == ([], 5)
    assert await alice.error("show-objects", type="gateway") == "generic_err_invalid_parameter"


async def test_accepted_parameters_that_mean_nothing_here_warn(alice: Admin) -> None:
    quiet = await alice.ok("add-host", name="h1", **{"ipv4-address": "10.0.0.1",
                           "ignore-warnings": True, "ignore-errors": False})  # fmt: skip
    assert "warnings" not in quiet
    noted = await alice.ok("add-host", name="h2", **{"ipv4-address": "10.0.0.2",
                           "auto-publish-session": True})  # fmt: skip
    assert [w["message"] for w in noted["warnings"]] == [
        "'auto-publish-session' is not acted on: call 'publish' to publish"
    ]
    plain = await alice.ok(
        "add-access-rule",
        layer="Network",
        name="r",
        position="top",
        **{"install-on": ["Policy Targets"], "content-direction": "any"},
    )
    assert "warnings" not in plain
    odd = await alice.ok("add-access-rule", layer="Network", name="r2", position="top",
                         **{"install-on": ["gw1"]})  # fmt: skip
    assert "install-on" in odd["warnings"][0]["message"]
    assert await alice.error("add-host", name="h3", colour="red") == (
        "generic_err_invalid_parameter_name"
    )
    assert await alice.error("show-access-rulebase", name="Network", hits=True) == (
        "generic_err_invalid_parameter_name"
    )


# ---------------------------------------------------------------- rules and sections


async def test_access_rule_shape(alice: Admin) -> None:
    await objects_and_rules(alice)
    rule = await alice.ok("show-access-rule", name="r1", layer="Network")
    assert rule["action"]["name"] == "Accept" and rule["action"]["uid"]
    assert rule["track"]["type"]["name"] == "None"
    assert [(s["name"], s["type"]) for s in rule["source"]] == [("g1", "group")]
    assert all(set(ref) >= {"uid", "name", "type"} for c in ("destination", "service",
               "install-on", "time", "content") for ref in rule[c])  # fmt: skip
    assert rule["install-on"][0]["name"] == "Policy Targets"
    full = await alice.ok("show-access-rule", uid=rule["uid"], layer="Network",
                          **{"details-level": "full"})  # fmt: skip
    assert full["source"][0]["members"][0]["name"] == "h1"
    logged = await alice.ok("set-access-rule", uid=rule["uid"], layer="Network",
                            track={"type": "Log", "accounting": False})  # fmt: skip
    assert logged["track"]["type"]["name"] == "Log"


async def test_sections_in_the_rulebase_and_positions(alice: Admin) -> None:
    for name in ("loose", "r1", "r2"):
        await alice.ok("add-access-rule", layer="Network", name=name, position="bottom")
    first = await alice.ok("add-access-section", layer="Network", name="S1",
                           position={"above": "r1"})  # fmt: skip
    assert first["type"] == "access-section"
    await alice.ok("add-access-section", layer="Network", name="S2", position="bottom")
    await alice.ok("add-access-section", layer="Network", name="Empty", position="bottom")
    await alice.ok("add-access-rule", layer="Network", name="s2-top", position={"top": "S2"})
    await alice.ok("add-access-rule", layer="Network", name="s1-end", position={"bottom": "S1"})
    await alice.ok("add-access-rule", layer="Network", name="s2-first", position={"below": "S2"})
    await alice.ok("add-access-rule", layer="Network", name="s1-last", position={"above": "S2"})
    rulebase = await alice.ok("show-access-rulebase", name="Network")
    assert names_in(rulebase["rulebase"]) == [
        "loose",
        ("S1", ["r1", "r2", "s1-end", "s1-last"]),
        ("S2", ["s2-first", "s2-top"]),
        ("Empty", []),
    ]
    s1, s2, empty = rulebase["rulebase"][1:]
    assert (s1["from"], s1["to"], s2["from"], s2["to"]) == (2, 5, 6, 7)
    assert "from" not in empty
    assert (rulebase["from"], rulebase["to"], rulebase["total"]) == (1, 7, 7)
    page = await alice.ok("show-access-rulebase", name="Network", offset=3, limit=3)
    assert names_in(page["rulebase"]) == [("S1", ["s1-end", "s1-last"]), ("S2", ["s2-first"])]
    assert (page["rulebase"][0]["from"], page["from"], page["to"]) == (4, 4, 6)
    total = await alice.ok("show-access-rulebase", name="Network", limit=0)
    assert (total["rulebase"], total["total"]) == ([], 7)
    assert (await alice.ok("show-access-rulebase", name="Network", limit=500))["to"] == 7
    assert await alice.error("show-access-rulebase", name="Network", limit=501) == (
        "generic_err_invalid_parameter"
    )
    uids = await alice.ok("show-access-rulebase", name="Network", **{"details-level": "uid"})
    assert set(uids["rulebase"][0]) == {"uid", "type", "rule-number"}
    inline = await alice.ok("show-access-rulebase", name="Network", limit=1,
                            **{"use-object-dictionary": False})  # fmt: skip
    assert "objects-dictionary" not in inline and inline["rulebase"][0]["action"]["name"] == "Drop"
    structure = await alice.ok("show-layer-structure", name="Network", **{"details-level": "uid"})
    children = structure["root-section"]["children"]
    assert [(c["name"], c.get("from-rule"), c.get("to-rule")) for c in children] == [
        ("S1", 2, 5), ("S2", 6, 7), ("Empty", None, None)]  # fmt: skip


async def test_section_commands(alice: Admin) -> None:
    await alice.ok("add-access-rule", layer="Network", name="r1", position="top")
    section = await alice.ok("add-access-section", layer="Network", name="S", position="top")
    shown = await alice.ok("show-access-section", name="S", layer="Network")
    assert shown["uid"] == section["uid"]
    renamed = await alice.ok("set-access-section", uid=section["uid"], layer="Network",
                             **{"new-name": "Servers"})  # fmt: skip
    assert renamed["name"] == "Servers"
    assert (await alice.ok("show-object", uid=section["uid"]))["object"]["name"] == "Servers"
    await alice.ok("set-access-section", name="Servers", layer="Network",
                   **{"new-position": "bottom"})  # fmt: skip
    rulebase = await alice.ok("show-access-rulebase", name="Network")
    assert names_in(rulebase["rulebase"]) == ["r1", ("Servers", [])]
    changes = await alice.ok("show-changes")
    assert sorted(c["type"] for c in changes["added-objects"]) == ["access-rule", "access-section"]
    assert await alice.ok("delete-access-section", name="Servers", layer="Network") == {
        "message": "OK"
    }
    assert await alice.error("show-access-section", name="Servers", layer="Network") == (
        "generic_err_object_not_found"
    )
    assert await alice.error("add-access-rule", name="x", position={"top": "nowhere"}) == (
        "generic_err_object_not_found"
    )
    await alice.ok("publish")
    rulebase = await alice.ok("show-access-rulebase", name="Network")
    assert names_in(rulebase["rulebase"]) == ["r1"]


# ---------------------------------------------------------------- concurrency


@pytest.fixture
def domain() -> Domain:
    domain = Domain.create("acme", "doc-sections")
    setup = Session.open(domain, admin="setup", server="s1")
    for name in ("A", "B", "C", "D"):
        setup.add_rule({"name": name, "position": "bottom"})
    setup.add_section({"name": "S1", "position": {"above": "B"}})
    setup.add_section({"name": "S2", "position": {"above": "D"}})
    publish(setup)
    return domain


def publish(session: Session) -> None:
    session.publish_in_memory()


def copy_of(domain: Domain) -> Domain:
    return Domain(domain.document_id, fork_with_actor(domain.doc, new_actor()))


def merged(first: Domain, second: Domain) -> DomainState:
    first.doc.merge(second.doc)
    second.doc.merge(first.doc)
    assert first.state == second.state == DomainState.from_plain(read(first.doc))
    return first.state


def layout(state: DomainState) -> list[tuple[str | None, list[str]]]:
    layer = state.get_layer()
    return [
        (layer.sections[g.section]["name"] if g.section else None,
         [layer.rules[uid]["name"] for _, uid in g.rules])
        for g in sections.groups(layer)
    ]  # fmt: skip


def test_a_concurrent_move_and_rename_of_a_section_both_survive(domain: Domain) -> None:
    other = copy_of(domain)
    mover = Session.open(domain, admin="alice", server="s1")
    renamer = Session.open(other, admin="bob", server="s2")
    mover.set_section({"name": "S2", "new-position": {"above": "C"}})
    renamer.set_section({"name": "S2", "new-name": "Servers"})
    renamer.set_rule({"name": "C", "comments": "edited"})
    publish(mover)
    publish(renamer)
    state = merged(domain, other)
    assert layout(state) == [(None, ["A"]), ("S1", ["B"]), ("Servers", ["C", "D"])]
    assert state.get_rule(state.get_layer(), "C")["comments"] == "edited"


def test_concurrent_rules_added_to_sections_on_two_copies_are_kept(domain: Domain) -> None:
    other = copy_of(domain)
    first = Session.open(domain, admin="alice", server="s1")
    second = Session.open(other, admin="bob", server="s2")
    first.add_rule({"name": "top-of-S1", "position": {"top": "S1"}})
    first.set_rule({"name": "A", "new-position": {"top": "S2"}})
    second.add_rule({"name": "end-of-S1", "position": {"bottom": "S1"}})
    second.add_section({"name": "S3", "position": "bottom"})
    second.add_rule({"name": "in-S3", "position": {"bottom": "S3"}})
    publish(first)
    publish(second)
    state = merged(domain, other)
    assert layout(state) == [
        ("S1", ["top-of-S1", "B", "C", "end-of-S1"]),
        ("S2", ["A", "D"]),
        ("S3", ["in-S3"]),
    ]


def test_a_rule_added_to_a_section_deleted_concurrently_stays(domain: Domain) -> None:
    other = copy_of(domain)
    deleter = Session.open(domain, admin="alice", server="s1")
    adder = Session.open(other, admin="bob", server="s2")
    deleter.delete_section({"name": "S2"})
    adder.add_rule({"name": "new", "position": {"top": "S2"}})
    publish(deleter)
    publish(adder)
    state = merged(domain, other)
    assert layout(state) == [(None, ["A"]), ("S1", ["B", "C", "new", "D"])]


def test_a_layer_without_sections_reads_as_before() -> None:
    plain = {"name": "Network", "rules": {"r": {"uid": "r", "name": "R"}}, "order": ["r"]}
    layer = layer_from_plain("l", plain)
    assert (layer.sections, layer.ordered_uids(), layer.entries()) == ({}, ["r"], ["r"])
    assert [(g.section, g.rules) for g in sections.groups(layer)] == [(None, [(1, "r")])]
