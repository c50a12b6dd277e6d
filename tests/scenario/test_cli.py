"""The administrator command line: help and usage errors, then end to end against a real
three-server cluster on loopback (separate `crdtmds start` processes).

The cluster tests share one cluster and run in file order; the failover test, which kills
the first server, comes last.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from crdtmds_cli.main import app
from typer.testing import CliRunner, Result

from crdtmds.api_socket import ApiError
from crdtmds.client import Client
from crdtmds.testing.localcluster import LocalCluster

CONVERGENCE_TIMEOUT = 20.0
DOMAIN = "acme"


def crdtmds(*args: str, session: Path | None = None, password: str | None = None) -> Result:
    env = {"CRDTMDS_PASSWORD": password} if password else {}
    argv = [*args, "--session-file", str(session)] if session is not None else list(args)
    return CliRunner().invoke(app, argv, env=env)


def ok(*args: str, session: Path, password: str | None = None) -> str:
    result = crdtmds(*args, session=session, password=password)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


def test_init_refuses_a_short_password_or_the_user_name(tmp_path: Path) -> None:
    base = ["init", "--name", "n1", "--listen", "127.0.0.1:0", "--admin", "admin"]
    for password in ("x", "eleven-char", "ADMIN"):
        result = crdtmds(*base, "--data", str(tmp_path / "a"), "--password", password)
        assert result.exit_code == 1 and "password" in result.output, result.output
        assert not (tmp_path / "a").exists()
    short = ["--password", "twelve-chars", "--min-password-length", "13"]
    assert crdtmds(*base, "--data", str(tmp_path / "b"), *short).exit_code == 1
    loose = ["--password", "pw", "--min-password-length", "2", "--json"]
    assert crdtmds(*base, "--data", str(tmp_path / "c"), *loose).exit_code == 0


def until(check: Any, timeout: float = CONVERGENCE_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.1)


# ---------------------------------------------------------------- without a server


def all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(command: Any, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_and_option_has_help() -> None:
    root = typer.main.get_command(app)
    paths = all_command_paths()
    names = {" ".join(p) for p in paths}
    for expected in ("login", "logout", "host add", "network set", "range list", "group show",
                     "service delete", "rule move", "rulebase show", "session publish",
                     "domain list", "revisions", "revert", "verify", "where-used", "apply",
                     "admin add"):  # fmt: skip
        assert expected in names
    for path in paths[1:]:
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        assert command.help, path
        for param in command.params:
            assert getattr(param, "help", None), (path, param.name)
    for path in (["host", "add"], ["rule", "move"], ["apply"], ["login"]):
        result = crdtmds(*path, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout


def test_commands_without_a_login_fail_plainly(tmp_path: Path) -> None:
    result = crdtmds("host", "list", session=tmp_path / "none.json")
    assert result.exit_code == 1
    assert result.stderr == "Error err_not_logged_in: not logged in: run `crdtmds login`\n"


def test_usage_mistakes_exit_2(tmp_path: Path) -> None:
    session = tmp_path / "none.json"
    assert crdtmds("rule", "add", "--position", "sideways", session=session).exit_code == 2
    assert crdtmds("network", "add", "lan", "--subnet", "10.0.0.0", session=session).exit_code == 2
    assert crdtmds("service", "add", "s", "--port", "1", "--protocol", "icmp",
                   session=session).exit_code == 2  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("command: add-host\n")
    assert crdtmds("apply", str(bad), session=session).exit_code == 2
    assert crdtmds("login", "--user", "x").exit_code == 2


# ---------------------------------------------------------------- against a cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("cluster")
    with LocalCluster(root, 3) as started:
        started.start()
        session = root / "setup.json"
        ok("login", "--server", started.urls[0], "--user", started.admin,
           session=session, password=started.password)  # fmt: skip
        ok("domain", "add", DOMAIN, session=session)
        yield started


def login(cluster: LocalCluster, session: Path, *servers: int, extra: tuple[str, ...] = ()) -> str:
    """Log in to the domain on the given servers (1-based), once the domain is there."""
    args = ["login", "--domain", DOMAIN, "--user", cluster.admin, *extra]
    for number in servers:
        args += ["--server", cluster.urls[number - 1]]

    def attempt() -> str | None:
        result = crdtmds(*args, session=session, password=cluster.password)
        if result.exit_code == 0:
            return result.stdout
        assert "generic_err_object_not_found" in result.stderr, result.output
        return None

    return until(attempt)


def rulebase(session: Path) -> dict[str, Any]:
    return json.loads(ok("rulebase", "show", "--json", session=session))


@pytest.mark.slow
def test_session_file_is_private_and_holds_no_password(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    session = tmp_path / "login.json"
    login(cluster, session, 1)
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    stored = json.loads(session.read_text())
    assert "password" not in stored and stored["sid"]
    assert cluster.password not in session.read_text()
    login(cluster, session, 1, extra=("--remember-password",))
    assert json.loads(session.read_text())["password"] == cluster.password
    assert ok("logout", session=session).endswith("logged out\n")
    assert not session.exists()


@pytest.mark.slow
def test_edits_on_server_1_publish_and_reach_server_3(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    one, three = tmp_path / "one.json", tmp_path / "three.json"
    login(cluster, one, 1)
    ok("host", "add", "web", "--ip", "192.0.2.10", session=one)
    ok("network", "add", "lan", "--subnet", "10.1.0.0/16", session=one)
    ok("group", "add", "servers", "--member", "web", session=one)
    ok("service", "add", "https", "--port", "443", session=one)
    ok("rule", "add", "--name", "lan to servers", "--source", "lan", "--destination", "servers",
       "--service", "https", "--action", "Accept", "--position", "top", session=one)  # fmt: skip
    ok("rule", "add", "--name", "cleanup", "--position", "bottom", session=one)
    changes = json.loads(ok("session", "show", "--json", session=one))["changes"]
    assert sorted(o["name"] for o in changes["added-objects"]) == [
        "cleanup", "https", "lan", "lan to servers", "servers", "web"]  # fmt: skip
    table = ok("session", "show", session=one)
    assert "6 change(s)" in table and "servers" in table
    assert "published revision" in ok("session", "publish", "--comments", "first", session=one)
    published = rulebase(one)
    assert [r["name"] for r in published["rulebase"]] == ["lan to servers", "cleanup"]

    login(cluster, three, 3)

    def same_rules_on_three() -> dict[str, Any] | None:
        seen = rulebase(three)
        uids = [r["uid"] for r in seen["rulebase"]]
        return seen if uids == [r["uid"] for r in published["rulebase"]] else None

    seen = until(same_rules_on_three)
    assert seen["rulebase"] == published["rulebase"]
    listed = json.loads(ok("host", "list", "--json", session=three))
    assert [h["name"] for h in listed["objects"]] == ["web"]
    assert "no problems" in ok("verify", session=three)


@pytest.mark.slow
def test_apply_runs_a_file_in_one_session(cluster: LocalCluster, tmp_path: Path) -> None:
    session = tmp_path / "apply.json"
    login(cluster, session, 2)
    good = tmp_path / "good.yaml"
    good.write_text(
        "- command: add-host\n  params: {name: db, ipv4-address: 192.0.2.20}\n"
        "- command: add-access-rule\n  params: {name: to db, destination: [db], position: top}\n"
    )
    output = ok("apply", str(good), session=session)
    assert "applied 2 command(s)" in output and "published revision" in output
    assert rulebase(session)["rulebase"][0]["name"] == "to db"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([
        {"command": "add-host", "params": {"name": "cache", "ipv4-address": "192.0.2.30"}},
        {"command": "add-host", "params": {"name": "broken", "ipv4-address": "300.0.0.1"}},
        {"command": "add-host", "params": {"name": "never", "ipv4-address": "192.0.2.31"}},
    ]))  # fmt: skip
    failed = crdtmds("apply", str(bad), "--keep-on-error", session=session)
    assert failed.exit_code == 1
    assert "Error err_validation_failed: entry 2 (add-host)" in failed.stderr
    assert "entries 1-1 stay unpublished" in failed.stderr
    changes = json.loads(ok("session", "show", "--json", session=session))["changes"]
    assert [o["name"] for o in changes["added-objects"]] == ["cache"]
    refused = crdtmds("apply", str(good), session=session)
    assert refused.exit_code == 1 and "err_session_not_empty" in refused.stderr
    ok("session", "discard", session=session)
    discarded = crdtmds("apply", str(bad), "--discard-on-error", session=session)
    assert discarded.exit_code == 1 and "discarded 1 change(s)" in discarded.stderr
    assert json.loads(ok("session", "show", "--json", session=session))["changes"]["total"] == 0


@pytest.mark.slow
def test_errors_print_code_and_message(cluster: LocalCluster, tmp_path: Path) -> None:
    session = tmp_path / "errors.json"
    login(cluster, session, 1)
    result = crdtmds("host", "add", "bad", "--ip", "300.1.1.1", session=session)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error err_validation_failed: ")
    missing = crdtmds("host", "show", "nowhere", session=session)
    assert missing.exit_code == 1 and missing.stderr.startswith(
        "Error generic_err_object_not_found: ")  # fmt: skip
    domains = json.loads(ok("domain", "list", "--json", session=session))["objects"]
    assert [d["url"].startswith("automerge:") for d in domains] == [True]


async def _concurrent_edits_on_two_servers(cluster: LocalCluster) -> None:
    """Two administrators on servers 1 and 2 edit one host, then create one name."""
    clients = [
        Client([url], user=cluster.admin, password=cluster.password, domain=DOMAIN)
        for url in cluster.urls[:2]
    ]
    first, second = clients
    try:
        await first.login()
        await first.call("add-host", name="shared", **{"ipv4-address": "192.0.2.50"})
        await first.call("publish")
        await _until_async(lambda: _host_comments(second, "shared"))
        await first.call("set-host", name="shared", comments="edited on 1")
        await second.call("set-host", name="shared", comments="edited on 2")
        await asyncio.gather(first.call("publish"), second.call("publish"))

        async def same_value() -> str | None:
            values = {await _host_comments(c, "shared") for c in clients}
            return values.pop() if len(values) == 1 else None

        assert await _until_async(same_value) in ("edited on 1", "edited on 2")
        for client in clients:
            assert (await client.call("verify-policy"))["problems"] == []

        await first.call("add-host", name="twin", **{"ipv4-address": "192.0.2.61"})
        await second.call("add-host", name="twin", **{"ipv4-address": "192.0.2.62"})
        await asyncio.gather(first.call("publish"), second.call("publish"))

        async def duplicate_seen_everywhere() -> bool:
            reports = [await c.call("verify-policy") for c in clients]
            return all(
                [(p["type"], p.get("name")) for p in r["problems"]] == [("duplicate-name", "twin")]
                for r in reports
            )

        await _until_async(duplicate_seen_everywhere)
    finally:
        for client in clients:
            await client.close()


async def _host_comments(client: Client, name: str) -> str | None:
    try:
        return (await client.call("show-host", name=name))["comments"] or "(none)"
    except ApiError as exc:
        if exc.code != "generic_err_object_not_found":
            raise
        return None


async def _until_async(check: Any, timeout: float = CONVERGENCE_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.mark.slow
def test_revert_after_two_sessions_publish_in_turn(cluster: LocalCluster, tmp_path: Path) -> None:
    """Two sessions on one server publish three hosts each, in turn, three rounds; a revert
    to the third revision brings back exactly the hosts it had (the Automerge core used to
    panic on this history and take the API connection down with it)."""
    setup = tmp_path / "setup.json"
    ok("login", "--server", cluster.urls[0], "--user", cluster.admin,
       session=setup, password=cluster.password)  # fmt: skip
    ok("domain", "add", "turns", session=setup)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    for session in (first, second):
        ok("login", "--server", cluster.urls[0], "--user", cluster.admin, "--domain", "turns",
           session=session, password=cluster.password)  # fmt: skip
    published: list[tuple[str, list[str]]] = []
    count = 0
    for _ in range(3):
        for session in (first, second):
            for _ in range(3):
                count += 1
                ok("host", "add", f"h{count}", "--ip", f"192.0.2.{count}", session=session)
            output = ok("session", "publish", session=session)
            uid = output.split("published revision ")[1].split()[0]
            hosts = json.loads(ok("host", "list", "--json", session=session))["objects"]
            published.append((uid, sorted(h["name"] for h in hosts)))
    assert published[-1][1] == sorted(f"h{n}" for n in range(1, 19))

    third, expected = published[2]
    output = ok("revert", third, session=first)
    assert f"reverted to {third}" in output
    hosts = json.loads(ok("host", "list", "--json", session=second))["objects"]
    assert sorted(h["name"] for h in hosts) == expected == sorted(f"h{n}" for n in range(1, 10))
    revisions = json.loads(ok("revisions", "--json", session=second))["objects"]
    assert len(revisions) == 7


@pytest.mark.slow
def test_concurrent_edits_on_two_servers_converge_and_verify(cluster: LocalCluster) -> None:
    asyncio.run(_concurrent_edits_on_two_servers(cluster))


@pytest.mark.slow
def test_failover_to_server_2_when_server_1_is_killed(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    session = tmp_path / "failover.json"
    login(cluster, session, 1, 2, extra=("--remember-password",))
    ok("host", "list", session=session)
    cluster.servers[0].kill()
    moved = crdtmds("host", "list", "--json", session=session)
    assert moved.exit_code == 0, moved.output
    assert "web" in [h["name"] for h in json.loads(moved.stdout)["objects"]]
    assert "warning: lost server" in moved.stderr
    assert json.loads(session.read_text())["server"] == f"{cluster.urls[1]}/api"
    ok("host", "add", "after-failover", "--ip", "192.0.2.77", "--publish", session=session)
