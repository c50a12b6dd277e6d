"""The administrators' API, in process: JSON text in, JSON text out, over a real Server.

Each test builds a server in a temporary directory with domains `acme` and `globex` and
administrators `root` (superuser), `alice` (read-write on acme), `reader` (read-only on
acme) and `bob` (read-write on globex), then talks to it through `JsonConnection`s.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

import crdtmds
from crdtmds.api.dispatch import AdminAPI
from crdtmds.bootstrap import init_cluster
from crdtmds.core import auth, model
from crdtmds.errors import AuthenticationFailed, InvalidParameter, TooManyRequests
from crdtmds.server import Server
from tests.helpers.api_doors import PASSWORDS, admin_api, connect, host
from tests.helpers.clock import FakeClock


def heads(api: AdminAPI) -> dict[str, Any]:
    return api.services.status.domain_heads()


# ---------------------------------------------------------------- logins


async def test_login_replies_like_check_point(api: AdminAPI) -> None:
    admin = connect(api)
    result = await admin.login("alice", **{"session-name": "morning", "session-timeout": 120})
    assert result["uid"] in api.services.sessions.by_uid
    assert api.services.sessions.by_uid[result["uid"]].name == "morning"
    assert result["session-timeout"] == 120
    assert result["read-only"] is False
    assert result["domain"]["name"] == "acme"
    assert result["api-server-version"] == crdtmds.__version__
    first_at = result["last-login-was-at"]["posix"]  # a first login reports itself
    assert first_at > 0
    again = await connect(api).login("alice")
    assert again["last-login-was-at"]["posix"] == first_at  # then the login before


async def test_wrong_password_and_unknown_user_are_refused(api: AdminAPI) -> None:
    admin = connect(api)
    assert await admin.error("login", user="alice", password="nope", domain="acme") == (
        "err_login_failed"
    )
    assert await admin.error("login", user="mallory", password="x") == "err_login_failed"
    await admin.login("alice")  # the connection is still usable
    assert (await admin.ok("show-session"))["user-name"] == "alice"


async def test_failed_logins_are_throttled_per_source_host(api: AdminAPI) -> None:
    for port in (1, 2, 3):  # a new connection (port) each time counts for the same host
        admin = connect(api, f"192.0.2.9:{port}")
        assert await admin.error("login", user="alice", password="bad") == "err_login_failed"
    blocked = connect(api, "192.0.2.9:4")
    code = await blocked.error("login", user="alice", password=PASSWORDS["alice"])
    assert code == "err_too_many_requests"
    await connect(api, "192.0.2.10:1").login("alice")  # another host is unaffected


async def test_every_call_but_login_and_status_needs_a_valid_sid(api: AdminAPI) -> None:
    admin = connect(api)
    assert await admin.error("show-hosts") == "generic_err_wrong_session_id"
    assert (await admin.send("show-hosts", sid="forged"))["error"]["code"] == (
        "generic_err_wrong_session_id"
    )
    status = await admin.ok("show-status")
    assert status["status"] == "up" and "domains" not in status and "name" not in status


async def test_show_status_details_need_a_login_or_its_status_token(api: AdminAPI) -> None:
    anonymous = connect(api)
    assert set(await anonymous.ok("show-status")) == {"status", "details"}
    assert "servers" not in await anonymous.ok("show-status", **{"status-token": "a\x1fb\x1fc"})
    alice = connect(api)
    await alice.login("alice")
    full = await alice.ok("show-status")
    assert "acme" in full["domains"] and full["status"] == "up"
    opened = await connect(api).ok("show-status", **{"status-token": full["status-token"]})
    assert "acme" in opened["domains"] and "status-token" not in opened


async def test_a_sid_works_from_another_connection(api: AdminAPI) -> None:
    first = connect(api)
    await first.login("alice")
    await first.ok("add-host", **host("web", "192.0.2.10"))
    await first.connection.close()
    second = connect(api)
    reply = await second.send("show-hosts", sid=first.sid)
    assert [h["name"] for h in reply["result"]["objects"]] == ["web"]


async def test_sessions_expire_unless_kept_alive(api: AdminAPI, clock: FakeClock) -> None:
    admin = connect(api)
    result = await admin.login("alice", **{"session-timeout": 60})
    clock.now += 50
    await admin.ok("keepalive")
    clock.now += 50
    await admin.ok("show-hosts")
    clock.now += 61
    assert await admin.error("show-hosts") == "generic_err_session_expired"
    assert await admin.error("show-hosts") == "generic_err_wrong_session_id"
    assert result["uid"] not in api.services.sessions.by_uid  # an empty draft is not kept


async def test_logout_keeps_a_draft_with_changes_for_continue_last_session(
    api: AdminAPI,
) -> None:
    admin = connect(api)
    first = await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    assert await admin.ok("logout") == {"message": "OK"}
    assert await admin.error("show-hosts") == "generic_err_wrong_session_id"
    assert first["uid"] in api.services.sessions.by_uid
    fresh = await admin.login("alice")
    assert fresh["uid"] != first["uid"]
    assert (await admin.ok("show-changes"))["total"] == 0
    await admin.ok("logout")
    resumed = await admin.login("alice", **{"continue-last-session": True})
    assert resumed["uid"] == first["uid"]
    changes = await admin.ok("show-changes")
    assert [o["name"] for o in changes["added-objects"]] == ["web"]


async def test_drafts_survive_a_restart_and_can_be_continued(node: Server, tmp_path: Path) -> None:
    admin = connect(node.api)
    first = await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    await node.close()
    reopened = await Server.open(tmp_path)
    try:
        admin = connect(reopened.api)
        assert (await admin.send("show-hosts", sid=first["sid"]))["error"]["code"] == (
            "generic_err_wrong_session_id"
        )  # logins are not kept across a restart
        resumed = await admin.login("alice", **{"continue-last-session": True})
        assert resumed["uid"] == first["uid"]
        assert [h["name"] for h in (await admin.ok("show-hosts"))["objects"]] == ["web"]
    finally:
        await reopened.close()


# ---------------------------------------------------------------- permissions


async def test_read_only_administrator_reads_but_cannot_write_or_publish(api: AdminAPI) -> None:
    root = connect(api)
    await root.login("root")
    await root.ok("add-host", **host("web", "192.0.2.10"))
    await root.ok("publish")
    reader = connect(api)
    result = await reader.login("reader")
    assert result["read-only"] is True
    assert [h["name"] for h in (await reader.ok("show-hosts"))["objects"]] == ["web"]
    before = heads(api)
    assert await reader.error("publish") == "err_insufficient_permissions"
    assert await reader.error("add-host", **host("db", "192.0.2.11")) == (
        "err_insufficient_permissions"
    )
    assert await reader.error("delete-host", name="web") == "err_insufficient_permissions"
    assert heads(api) == before


async def test_a_read_only_login_of_a_writer_cannot_publish(api: AdminAPI) -> None:
    alice = connect(api)
    await alice.login("alice", **{"read-only": True})
    assert await alice.error("publish") == "err_insufficient_permissions"
    assert await alice.error("add-host", **host("web", "192.0.2.10")) == (
        "err_insufficient_permissions"
    )


async def test_a_domain_administrator_cannot_reach_another_domain(api: AdminAPI) -> None:
    bob = connect(api)
    assert await bob.error("login", user="bob", password=PASSWORDS["bob"], domain="acme") == (
        "err_insufficient_permissions"
    )
    await bob.login("bob", domain="globex")
    assert await bob.error("show-hosts", domain="acme") == "err_insufficient_permissions"
    assert await bob.error("show-access-rulebase", domain="acme") == (
        "err_insufficient_permissions"
    )
    assert await bob.error("show-revisions", domain="acme") == "err_insufficient_permissions"
    domains = await bob.ok("show-domains")
    assert [d["name"] for d in domains["objects"]] == ["globex"]
    system = connect(api)
    await system.login("bob", domain=None)
    assert await system.error("verify-policy", domain="acme") == "err_insufficient_permissions"
    assert (await system.ok("verify-policy", domain="globex"))["total"] == 0


async def test_cluster_commands_need_a_superuser(api: AdminAPI) -> None:
    alice = connect(api)
    await alice.login("alice")
    assert await alice.error("add-domain", name="initech") == "err_insufficient_permissions"
    assert await alice.error("add-administrator", name="eve", password="x") == (
        "err_insufficient_permissions"
    )
    listed = await alice.ok("show-administrators")
    assert [a["name"] for a in listed["objects"]] == ["alice"]


async def test_superuser_adds_domains_and_administrators_without_leaking_hashes(
    api: AdminAPI,
) -> None:
    root = connect(api)
    await root.login("root", domain=None)
    domain = await root.ok("add-domain", name="initech")
    assert domain["url"] == f"automerge:{domain['document-id']}"
    assert domain["available"] is True
    added = await root.ok(
        "add-administrator",
        name="carol",
        password="carol-password",
        domains={"initech": "read-write"},
    )
    assert added == {
        "name": "carol", "superuser": False, "domains": {"initech": "read-write"},
        "type": "administrator",
    }  # fmt: skip
    listed = await root.ok("show-administrators")
    assert "password-hash" not in json.dumps(listed)
    assert {a["name"] for a in listed["objects"]} == {"root", "alice", "reader", "bob", "carol"}
    carol = connect(api)
    assert (await carol.ok("login", user="carol", password="carol-password", domain="initech"))[
        "sid"
    ]
    domains = await root.ok("show-domains")
    assert [d["name"] for d in domains["objects"]] == ["acme", "globex", "initech"]
    assert all(d["url"].startswith("automerge:") for d in domains["objects"])
    assert await root.error("add-domain", name="initech") == "err_name_in_use"


async def test_a_system_wide_login_cannot_edit_without_a_domain(api: AdminAPI) -> None:
    root = connect(api)
    await root.login("root", domain=None)
    assert await root.error("add-host", **host("web", "192.0.2.10")) == (
        "generic_err_invalid_parameter"
    )
    assert await root.error("show-hosts") == "generic_err_invalid_parameter"
    assert (await root.ok("show-hosts", domain="acme"))["total"] == 0


# ---------------------------------------------------------------- malformed requests


async def test_malformed_requests_get_clear_errors_and_change_nothing(api: AdminAPI) -> None:
    admin = connect(api)
    await admin.login("alice")
    before = heads(api)

    async def raw(text: str | bytes) -> dict[str, Any]:
        return json.loads(await admin.connection.handle_text(text))

    assert (await raw("{not json"))["error"]["code"] == "generic_err_invalid_syntax"
    assert (await raw(b"\xff\xfe"))["error"]["code"] == "generic_err_invalid_syntax"
    assert (await raw("[1, 2]"))["error"]["code"] == "generic_err_invalid_syntax"
    missing_command = await raw('{"id": 3}')
    assert missing_command["id"] == 3
    assert missing_command["error"]["code"] == "generic_err_invalid_syntax"
    assert (await raw('{"id": 4, "command": "add-host", "params": [1]}'))["error"]["code"] == (
        "generic_err_invalid_syntax"
    )
    assert await admin.error("launch-missiles") == "generic_err_command_not_found"
    assert await admin.error("add-host", **host("web", "192.0.2.10"), colour="red") == (
        "generic_err_invalid_parameter_name"
    )
    assert await admin.error("add-host", name=5, **{"ipv4-address": "192.0.2.10"}) == (
        "generic_err_invalid_parameter"
    )
    assert await admin.error("add-host", name="web") == "generic_err_missing_required_parameters"
    assert await admin.error("show-hosts", limit="ten") == "generic_err_invalid_parameter"
    assert await admin.error("show-hosts", limit=True) == "generic_err_invalid_parameter"
    assert await admin.error("show-hosts", offset=-1) == "generic_err_invalid_parameter"
    assert await admin.error("show-hosts", **{"details-level": "all"}) == (
        "generic_err_invalid_parameter"
    )
    assert await admin.error("add-group", name="g", members=7) == "generic_err_invalid_parameter"
    assert await admin.error("add-access-rule", enabled="yes") == "generic_err_invalid_parameter"
    assert await admin.error("publish", comments=3) == "generic_err_invalid_parameter"
    for bad in ("300.1.1.1", "192.0.2", "::zz", "", "2001:db8::1"):
        code = await admin.error("add-host", **host("web", bad))
        assert code == "err_validation_failed", bad
    assert await admin.error("add-network", name="n", subnet4="10.0.0.1", **{
        "mask-length4": 24}) == "err_validation_failed"  # fmt: skip
    assert await admin.error("add-address-range", name="r", **{
        "ipv4-address-first": "10.0.0.9", "ipv4-address-last": "10.0.0.1"
    }) == "err_validation_failed"  # fmt: skip
    assert await admin.error("add-service-tcp", name="s", port="70000") == "err_validation_failed"
    assert heads(api) == before
    assert (await admin.ok("show-changes"))["total"] == 0
    assert (await admin.ok("show-hosts"))["total"] == 0


async def test_replies_are_ascii_so_any_echoed_text_can_be_sent(api: AdminAPI) -> None:
    admin = connect(api)
    text = await admin.connection.handle_text('{"id": "\\ud800", "command": "keepalive"}')
    text.encode("utf-8")
    assert text.isascii()
    assert json.loads(text)["id"] == "\ud800"
    unicode_name = await admin.connection.handle_text(
        json.dumps({"id": 1, "command": "login", "params": {"user": "ünïcode", "password": "x"}})
    )
    assert json.loads(unicode_name)["error"]["code"] == "err_login_failed"


async def test_an_unexpected_failure_is_an_internal_error_reply(
    api: AdminAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = connect(api)
    await admin.login("alice")

    async def broken(call: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    command = api.commands["show-hosts"]
    monkeypatch.setitem(api.commands, "show-hosts", type(command)(broken, command.access,
                                                                  command.params))  # fmt: skip
    reply = await admin.send("show-hosts")
    assert reply["error"]["code"] == "generic_internal_error"
    assert "boom" not in reply["error"]["message"]
    assert (await admin.ok("show-networks"))["total"] == 0


# ---------------------------------------------------------------- objects


async def test_objects_of_every_type_through_their_life(api: AdminAPI) -> None:
    admin = connect(api)
    await admin.login("alice")
    web = await admin.ok("add-host", **host("web", "192.0.2.10", comments="front"))
    assert web["type"] == "host" and web["domain"]["name"] == "acme"
    assert isinstance(web["uid"], str) and web["uid"]
    await admin.ok("add-network", name="lan", subnet4="10.1.0.0", **{"mask-length4": 16})
    await admin.ok("add-address-range", name="pool", **{
        "ipv4-address-first": "10.1.0.10", "ipv4-address-last": "10.1.0.20"})  # fmt: skip
    await admin.ok("add-service-tcp", name="https", port="443")
    await admin.ok("add-service-udp", name="dns", port=53)
    group = await admin.ok("add-group", name="servers", members=["web", "lan"])
    assert [(m["name"], m["type"]) for m in group["members"]] == [
        ("web", "host"),
        ("lan", "network"),
    ]
    shown = await admin.ok("show-host", uid=web["uid"])
    assert shown["ipv4-address"] == "192.0.2.10" and shown["comments"] == "front"
    changed = await admin.ok(
        "set-host", name="web", **{"new-name": "www", "ipv4-address": "192.0.2.11"}
    )
    assert (changed["uid"], changed["name"], changed["ipv4-address"]) == (
        web["uid"], "www", "192.0.2.11")  # fmt: skip
    assert (await admin.ok("show-network", name="lan"))["mask-length4"] == 16
    assert (await admin.ok("show-address-range", name="pool"))["ipv4-address-last"] == "10.1.0.20"
    assert (await admin.ok("show-service-udp", name="dns"))["port"] == "53"
    assert await admin.error("show-service-tcp", name="dns") == "generic_err_object_not_found"
    assert await admin.error("add-host", **host("www", "192.0.2.12")) == "err_name_in_use"
    assert await admin.error("delete-host", name="www") == "err_object_in_use"
    used = await admin.ok("where-used", name="www")
    assert used["used-directly"]["total"] == 1
    assert used["used-directly"]["objects"][0]["name"] == "servers"
    await admin.ok("set-group", name="servers", members=["lan"])
    assert await admin.ok("delete-host", name="www") == {"message": "OK"}
    assert await admin.error("show-host", name="www") == "generic_err_object_not_found"


async def test_lists_page_filter_and_count(api: AdminAPI) -> None:
    admin = connect(api)
    await admin.login("alice")
    for n in range(7):
        await admin.ok("add-host", **host(f"h{n}", f"192.0.2.{n + 1}"))
    await admin.ok("add-host", **host("zeta", "192.0.2.99"))
    first = await admin.ok("show-hosts", limit=3)
    assert (first["from"], first["to"], first["total"]) == (1, 3, 8)
    assert [h["name"] for h in first["objects"]] == ["h0", "h1", "h2"]
    last = await admin.ok("show-hosts", limit=3, offset=6)
    assert (last["from"], last["to"], last["total"]) == (7, 8, 8)
    beyond = await admin.ok("show-hosts", offset=50)
    assert (beyond["objects"], beyond["to"], beyond["total"]) == ([], 8, 8)
    filtered = await admin.ok("show-hosts", filter="H")
    assert filtered["total"] == 7
    uids = await admin.ok("show-hosts", limit=2, **{"details-level": "uid"})
    assert all(isinstance(u, str) for u in uids["objects"]) and len(uids["objects"]) == 2
    assert (await admin.ok("show-hosts"))["to"] == 8  # default limit 50


# ---------------------------------------------------------------- rules


async def test_rules_positions_moves_and_rulebase(api: AdminAPI) -> None:
    admin = connect(api)
    await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    await admin.ok("add-network", name="lan", subnet4="10.1.0.0", **{"mask-length4": 16})
    await admin.ok("add-service-tcp", name="https", port="443")
    a = await admin.ok("add-access-rule", layer="Network", position="top", name="A",
                       source=["lan"], destination=["web"], service=["https"],
                       action="Accept", track={"type": "Log"})  # fmt: skip
    assert a["rule-number"] == 1 and a["type"] == "access-rule"
    assert [s["name"] for s in a["source"]] == ["lan"]
    await admin.ok("add-access-rule", position="bottom", name="C", action="Drop")
    b = await admin.ok("add-access-rule", position={"above": "C"}, name="B")
    assert b["rule-number"] == 2
    rulebase = await admin.ok("show-access-rulebase", name="Network")
    assert [(r["rule-number"], r["name"]) for r in rulebase["rulebase"]] == [
        (1, "A"), (2, "B"), (3, "C")]  # fmt: skip
    assert rulebase["name"] == "Network" and rulebase["total"] == 3
    dictionary = {o["uid"]: o["name"] for o in rulebase["objects-dictionary"]}
    # Check Point's predefined objects too: actions, tracks, Policy Targets (install-on).
    assert set(dictionary.values()) == {"lan", "web", "https", "Any", "Accept", "Drop", "Log",
                                        "None", "Policy Targets"}  # fmt: skip
    assert rulebase["rulebase"][0]["source"] == [k for k, v in dictionary.items() if v == "lan"]
    moved = await admin.ok("set-access-rule", name="C", **{"new-position": "top"})
    assert moved["rule-number"] == 1
    await admin.ok("set-access-rule", uid=a["uid"], **{"new-position": {"below": "B"}})
    names = [r["name"] for r in (await admin.ok("show-access-rulebase"))["rulebase"]]
    assert names == ["C", "B", "A"]
    shown = await admin.ok("show-access-rule", **{"rule-number": 3})
    assert shown["uid"] == a["uid"] and shown["track"]["type"]["name"] == "Log"
    page = await admin.ok("show-access-rulebase", limit=2, offset=1)
    assert [(r["rule-number"], r["name"]) for r in page["rulebase"]] == [(2, "B"), (3, "A")]
    assert (page["from"], page["to"], page["total"]) == (2, 3, 3)
    assert await admin.error("set-access-rule", name="A", **{"new-position": "sideways"}) == (
        "generic_err_invalid_parameter"
    )
    assert await admin.error("add-access-rule", name="D", source=["nowhere"]) == (
        "err_validation_failed"
    )
    assert await admin.ok("delete-access-rule", name="B") == {"message": "OK"}
    assert (await admin.ok("show-access-rulebase"))["total"] == 2
    used = await admin.ok("where-used", name="web")
    rules = used["used-directly"]["access-control-rules"]
    assert [(r["rule"]["name"], r["rule-columns"], r["position"]) for r in rules] == [
        ("A", ["destination"], 2)]  # fmt: skip


# ---------------------------------------------------------------- sessions and revisions


async def test_show_changes_publish_task_and_discard(api: AdminAPI) -> None:
    admin = connect(api)
    await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    await admin.ok("add-host", **host("db", "192.0.2.20"))
    publish = await admin.ok("publish", comments="first")
    assert publish["revision"]["comments"] == "first"
    tasks = await admin.ok("show-task", **{"task-id": publish["task-id"]})
    assert tasks["tasks"][0]["status"] == "succeeded"
    assert tasks["tasks"][0]["task-details"][0]["revision"]["uid"] == publish["revision"]["uid"]
    assert await admin.error("show-task", **{"task-id": "nope"}) == "generic_err_object_not_found"
    await admin.ok("set-host", name="web", comments="changed")
    await admin.ok("delete-host", name="db")
    await admin.ok("add-service-tcp", name="ssh", port="22")
    changes = await admin.ok("show-changes")
    assert [o["name"] for o in changes["added-objects"]] == ["ssh"]
    assert [o["fields"] for o in changes["modified-objects"]] == [
        {"comments": {"old": "", "new": "changed"}}]  # fmt: skip
    assert [o["name"] for o in changes["deleted-objects"]] == ["db"]
    session = await admin.ok("show-session")
    assert session["changes"] == 3 and session["in-work"] is True
    discarded = await admin.ok("discard")
    assert discarded == {"message": "OK", "number-of-discarded-changes": 3}
    names = [h["name"] for h in (await admin.ok("show-hosts"))["objects"]]
    assert names == ["db", "web"]
    assert (await admin.ok("show-host", name="web"))["comments"] == ""
    nothing = await admin.ok("publish")
    assert nothing["revision"] is None
    sessions = await admin.ok("show-sessions")
    assert [s["user-name"] for s in sessions["objects"]] == ["alice"]


async def test_show_changes_names_the_objects_its_changes_refer_to(api: AdminAPI) -> None:
    admin = connect(api)
    await admin.login("alice")
    web = await admin.ok("add-host", **host("web", "192.0.2.10"))
    old = await admin.ok("add-host", **host("old", "192.0.2.11"))
    await admin.ok("add-group", name="servers", members=["old"])
    await admin.ok("publish")
    await admin.ok("set-group", name="servers", members=["web"])
    await admin.ok("delete-group", name="servers")
    await admin.ok("add-group", name="front", members=["web"])
    await admin.ok("add-access-rule", name="r", destination=["front"], action="Accept")
    changes = await admin.ok("show-changes")
    dictionary = {o["uid"]: o["name"] for o in changes["objects-dictionary"]}
    front = next(o for o in changes["added-objects"] if o["name"] == "front")
    assert dictionary[web["uid"]] == "web"
    assert dictionary[front["uid"]] == "front"
    assert dictionary[old["uid"]] == "old"  # a member of the deleted group
    assert model.ANY_UID in dictionary


async def test_edits_are_private_until_published_and_persisted(
    api: AdminAPI, node: Server, tmp_path: Path
) -> None:
    alice, root = connect(api), connect(api)
    await alice.login("alice")
    await root.login("root")
    before = heads(node.api)
    await alice.ok("add-host", **host("web", "192.0.2.10"))
    assert heads(node.api) == before
    assert (await root.ok("show-hosts"))["total"] == 0
    await alice.ok("publish")
    assert heads(node.api) != before
    assert [h["name"] for h in (await root.ok("show-hosts"))["objects"]] == ["web"]
    stored = await node.storage.load_document(node.documents.domain("acme").document_id)
    assert stored is not None and stored.get_heads() == node.documents.domain("acme").heads()


async def test_revisions_and_revert(api: AdminAPI) -> None:
    admin = connect(api)
    await admin.login("alice")
    await admin.ok("add-host", **host("web", "192.0.2.10"))
    first = (await admin.ok("publish", comments="v1"))["revision"]
    await admin.ok("set-host", name="web", **{"ipv4-address": "192.0.2.99"})
    await admin.ok("add-host", **host("db", "192.0.2.20"))
    await admin.ok("publish", comments="v2")
    revisions = await admin.ok("show-revisions")
    assert [r["comments"] for r in revisions["objects"]] == ["v2", "v1"]
    assert revisions["total"] == 2
    await admin.ok("add-host", **host("tmp", "192.0.2.30"))
    assert await admin.error("revert-to-revision", **{"to-revision": first["uid"]}) == (
        "err_validation_failed"
    )
    await admin.ok("discard")
    assert await admin.error("revert-to-revision", **{"to-revision": "nope"}) == (
        "generic_err_object_not_found"
    )
    reverted = await admin.ok("revert-to-revision", **{"to-revision": first["uid"]})
    assert reverted["revision"]["uid"] != first["uid"]
    hosts = (await admin.ok("show-hosts"))["objects"]
    assert [(h["name"], h["ipv4-address"]) for h in hosts] == [("web", "192.0.2.10")]
    assert (await admin.ok("show-revisions"))["total"] == 3
    other = connect(api)
    await other.login("root")
    assert (await other.ok("show-hosts"))["total"] == 1


async def test_concurrent_edits_of_one_host_converge_and_verify_clean(api: AdminAPI) -> None:
    setup = connect(api)
    await setup.login("root")
    await setup.ok("add-host", **host("web", "192.0.2.10"))
    await setup.ok("publish")
    alice, root = connect(api), connect(api)
    await alice.login("alice")
    await root.login("root")
    await alice.ok("set-host", name="web", comments="alice was here")
    await root.ok("set-host", name="web", comments="root was here")
    await alice.ok("publish")
    await root.ok("publish")
    seen = {(await a.ok("show-host", name="web"))["comments"] for a in (alice, root, setup)}
    assert len(seen) == 1 and seen <= {"alice was here", "root was here"}
    assert (await alice.ok("show-hosts"))["total"] == 1
    assert await alice.ok("verify-policy") == {
        "domain": (await alice.ok("show-host", name="web"))["domain"],
        "problems": [],
        "total": 0,
    }


async def test_a_publish_whose_rebase_fails_is_refused_and_keeps_the_draft(api: AdminAPI) -> None:
    # On one server a publish rebases the draft's edits onto what was published since it
    # started: a name taken meanwhile refuses it (servers apart merge, and verify-policy
    # reports the duplicate: see the cluster scenarios).
    alice, root = connect(api), connect(api)
    await alice.login("alice")
    await root.login("root")
    await alice.ok("add-host", **host("dup", "192.0.2.1"))
    two = await root.ok("add-host", **host("dup", "192.0.2.2"))
    await root.ok("add-host", **host("other", "192.0.2.3"))
    await alice.ok("publish")
    reply = await root.send("publish", {})
    assert reply["error"]["code"] == "err_validation_failed"
    [conflict] = reply["error"]["details"]["conflicts"]
    assert (conflict["command"], conflict["name"]) == ("add-object", "dup")
    assert "already in use" in conflict["reason"]
    added = (await root.ok("show-changes"))["added-objects"]
    assert sorted(entry["uid"] for entry in added if entry["name"] == "dup") == [two["uid"]]
    assert await root.ok("discard")
    assert (await alice.ok("verify-policy"))["total"] == 0


async def test_publishes_of_many_sessions_add_no_actor_per_session(api: AdminAPI) -> None:
    document = api.services.documents.domain("acme").doc
    before = {change.actor_id for change in document.get_changes([])}
    for number in range(4):
        login = connect(api)
        await login.login("alice" if number % 2 else "root")
        await login.ok("add-host", **host(f"h{number}", f"192.0.2.{number + 1}"))
        await login.ok("publish")
        await login.ok("logout")
    document = api.services.documents.domain("acme").doc
    new = {change.actor_id for change in document.get_changes([])} - before
    assert len(new) <= 1 and new <= set(api.services.sessions.actors.actors)


async def test_an_idle_session_sees_and_builds_on_newer_publishes(api: AdminAPI) -> None:
    alice, root = connect(api), connect(api)
    await alice.login("alice")
    await root.login("root")
    await root.ok("add-host", **host("web", "192.0.2.10"))
    await root.ok("publish")
    assert (await alice.ok("show-hosts"))["total"] == 1
    group = await alice.ok("add-group", name="g", members=["web"])
    assert group["members"][0]["name"] == "web"
    await alice.ok("publish")
    assert (await root.ok("show-group", name="g"))["members"][0]["name"] == "web"


# ---------------------------------------------------------------- automerge-repo clients


async def test_repo_clients_authenticate_and_read_only_permitted_domains(api: AdminAPI) -> None:
    node = api.services
    acme, globex = (
        node.documents.domain("acme").document_id,
        node.documents.domain("globex").document_id,
    )
    admin, may_read = await api.services.logins.authenticate_repo_client(
        {"user": "alice", "password": PASSWORDS["alice"]}
    )
    assert admin == "alice"
    assert may_read(acme) and not may_read(globex)
    assert not may_read(node.documents.cluster.document_id)
    _, root_reads = await api.services.logins.authenticate_repo_client(
        {"user": "root", "password": PASSWORDS["root"]}
    )
    assert (
        root_reads(acme)
        and root_reads(globex)
        and not root_reads(node.documents.cluster.document_id)
    )
    bob = connect(api)
    login = await bob.login("bob", domain="globex")
    admin, may_read = await api.services.logins.authenticate_repo_client({"token": login["sid"]})
    assert admin == "bob" and may_read(globex) and not may_read(acme)
    for query in ({"user": "alice", "password": "wrong"}, {"token": "forged"}, {}):
        with pytest.raises(AuthenticationFailed):
            await api.services.logins.authenticate_repo_client(query)


# ---------------------------------------------------------------- login throttling


class CountedChecks:
    """Wraps `auth.verify_password`: counts calls per password and where they ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.passwords: list[str] = []
        self.on_loop_thread = 0
        self._verify = auth.verify_password
        self._loop_thread = threading.get_ident()
        monkeypatch.setattr(auth, "verify_password", self)

    def __call__(self, password: Any, stored: Any) -> bool:
        self.passwords.append(password)
        self.on_loop_thread += threading.get_ident() == self._loop_thread
        return self._verify(password, stored)

    def count(self, password: str) -> int:
        return self.passwords.count(password)


@pytest.fixture
def limited_api(node: Server, clock: FakeClock) -> AdminAPI:
    """The default limit of 5, on a clock that stands still: one window."""
    return admin_api(node, throttle=auth.LoginThrottle(limit=5, clock=clock), clock=clock)


async def test_a_good_login_of_another_user_does_not_forgive_wrong_guesses(
    limited_api: AdminAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 wrong guesses for root, then 1 good login of reader, from one address, 25 times."""
    checks = CountedChecks(monkeypatch)
    attacker = connect(limited_api, "198.51.100.7:40000")
    codes = []
    for _ in range(25):
        for _ in range(4):
            codes.append(await attacker.error("login", user="root", password="guess-guess-guess"))
        await attacker.login("reader")
    assert checks.count("guess-guess-guess") == 5
    assert codes.count("err_login_failed") == 5
    assert codes.count("err_too_many_requests") == 95


async def test_parallel_wrong_logins_get_no_more_checks_than_the_limit(
    limited_api: AdminAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 wrong logins over 20 parallel connections from one address."""
    checks = CountedChecks(monkeypatch)

    async def guesses(port: int) -> list[str]:
        admin = connect(limited_api, f"198.51.100.7:{port}")
        return [await admin.error("login", user="root", password="guess-guess") for _ in range(10)]

    codes = [c for batch in await asyncio.gather(*map(guesses, range(20))) for c in batch]
    assert len(codes) == 200
    assert checks.count("guess-guess") == 5
    assert limited_api.services.logins.throttle.checks == 5
    assert codes.count("err_login_failed") == 5


async def test_a_flood_from_its_own_address_cannot_lock_out_a_known_good_administrator(
    limited_api: AdminAPI,
) -> None:
    """One attacker behind the team's NAT floods root and unknown names; root, holding the
    device token of an earlier login, still logs in, and so does alice from elsewhere."""
    nat = "203.0.113.5"
    earlier = await connect(limited_api, f"{nat}:1000").login("root", domain=None)
    attacker = connect(limited_api, f"{nat}:2000")
    for n in range(100):
        code = await attacker.error("login", user="root", password=f"guess-{n:04}-guess")
        assert code in ("err_login_failed", "err_too_many_requests")
        await attacker.error("login", user=f"nobody-{n}", password="guess-guess-guess")
    root = connect(limited_api, f"{nat}:3000")
    assert await root.error("login", user="root", password=PASSWORDS["root"]) == (
        "err_too_many_requests"  # without the token this address must wait
    )
    result = await root.login("root", domain=None, **{"device-token": earlier["device-token"]})
    assert result["sid"] and result["device-token"]
    assert await connect(limited_api, "192.0.2.200:1").login("alice")
    alice = connect(limited_api, f"{nat}:4000")
    code = await alice.error(
        "login",
        user="alice",
        password=PASSWORDS["alice"],
        **{"device-token": result["device-token"]},
    )
    assert code == "err_too_many_requests"  # root's token is no token for alice
    assert limited_api.services.logins.throttle.failures(f"pair:{nat}:root") == 5


async def test_unknown_repo_client_users_take_the_same_path_as_known_ones(
    limited_api: AdminAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/sync: a hash computed off the event loop and a throttled failure, known or not."""
    checks = CountedChecks(monkeypatch)
    throttle = limited_api.services.logins.throttle
    for user in ("nobody", "alice"):
        with pytest.raises(AuthenticationFailed):
            await limited_api.services.logins.authenticate_repo_client(
                {"user": user, "password": "wrong-password"}, "198.51.100.9:5000"
            )
        assert throttle.failures(f"pair:198.51.100.9:{user}") == 1
    assert checks.count("wrong-password") == 2
    assert checks.on_loop_thread == 0
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            await limited_api.services.logins.authenticate_repo_client(
                {"user": "nobody", "password": "wrong-password"}, "198.51.100.9:5001"
            )
    with pytest.raises(TooManyRequests):
        await limited_api.services.logins.authenticate_repo_client(
            {"user": "nobody", "password": "wrong-password"}, "198.51.100.9:5002"
        )


async def test_weak_passwords_are_refused_wherever_one_is_set(
    api: AdminAPI, node: Server, tmp_path: Path
) -> None:
    root = connect(api)
    await root.login("root", domain=None)
    for name, password in (
        ("carol", "x"),
        ("carol", "eleven-char"),
        ("carol-admin-1", "carol-admin-1"),
    ):
        code = await root.error("add-administrator", name=name, password=password, superuser=True)
        assert code == "generic_err_invalid_parameter"
    assert "carol" not in node.documents.cluster.administrators()
    with pytest.raises(InvalidParameter):
        await init_cluster(
            tmp_path / "weak", name="s2", listen_host="127.0.0.1", listen_port=0, url="",
            region="eu", admin="root", password="root",
        )  # fmt: skip
    assert not (tmp_path / "weak").exists()
