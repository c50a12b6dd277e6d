"""Against a real two-server cluster on loopback: the CLI refuses a name two objects
share, `verify` exits 1 naming what it found, a rule position past the end and an
ambiguous revision prefix are refused; then the README's failover example runs as
written and survives the kill of its first server (last: it kills server 1)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crdtmds_cli.main import app
from typer.testing import CliRunner, Result

from crdtmds.client import Client
from crdtmds.testing.localcluster import LocalCluster

README = Path(__file__).resolve().parents[2] / "README.md"
WAIT = 20.0


def cli(*args: str, login: Path | None = None, password: str | None = None) -> Result:
    argv = [*args, "--login-file", str(login)] if login is not None else list(args)
    return CliRunner().invoke(app, argv, env={"CRDTMDS_PASSWORD": password or ""})


def until(check: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.1)
    return value


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("readme"), 2) as started:
        started.start()
        yield started


async def add_twins(cluster: LocalCluster) -> None:
    clients = [Client([u], user=cluster.admin, password=cluster.password, domain="twins")
               for u in cluster.urls]  # fmt: skip
    try:
        for number, client in enumerate(clients, start=1):
            await client.login()
            await client.call("add-host", name="twin", **{"ipv4-address": f"192.0.2.{number}"})
        await asyncio.gather(*(c.call("publish") for c in clients))
    finally:
        for client in clients:
            await client.close()


@pytest.mark.slow
def test_twins_verify_positions_and_prefixes(cluster: LocalCluster, tmp_path: Path) -> None:
    login = tmp_path / "login.json"
    system = ["login", "--server", cluster.urls[0], "--user", cluster.admin]
    assert cli(*system, login=login, password=cluster.password).exit_code == 0
    assert cli("domain", "add", "twins", login=login).exit_code == 0
    domain_login = [*system, "--server", cluster.urls[1], "--domain", "twins"]
    on_two = ["login", "--server", cluster.urls[1], "--user", cluster.admin, "--domain", "twins"]
    until(lambda: cli(*on_two, login=tmp_path / "two.json", password=cluster.password).exit_code
          == 0)  # fmt: skip
    asyncio.run(add_twins(cluster))
    assert cli(*domain_login, login=login, password=cluster.password).exit_code == 0

    def both() -> list[dict[str, Any]] | None:
        hosts = json.loads(cli("host", "list", "--json", login=login).stdout)["objects"]
        return hosts if len(hosts) == 2 else None

    uids = sorted(h["uid"] for h in until(both))
    refused = cli("host", "set", "twin", "--comments", "which?", login=login)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error err_ambiguous_name: 2 hosts are named 'twin': ")
    assert all(uid in refused.stderr for uid in uids)
    assert cli("host", "set", uids[0], "--comments", "this one", login=login).exit_code == 0

    verify = cli("verify", login=login)
    assert verify.exit_code == 1 and verify.stderr == "1 problem(s) found\n"
    assert re.search(r"duplicate-name +twin +2 objects: host \S+, host \S+", verify.stdout)

    for name in ("a", "b", "c"):
        assert cli("rule", "add", "--name", name, login=login).exit_code == 0
    far = cli("rule", "add", "--name", "far", "--position", "99", login=login)
    assert far.exit_code == 1
    assert far.stderr == ("Error err_validation_failed: position 99 is beyond the end of layer "
                          "'Network' (3 rule(s)): give 1 to 4, or bottom\n")  # fmt: skip
    assert cli("session", "publish", login=login).exit_code == 0

    revisions = json.loads(cli("revisions", "--json", login=login).stdout)["objects"]
    ambiguous = cli("revert", "", login=login)
    assert ambiguous.exit_code == 1
    assert ambiguous.stderr.startswith(f"Error err_ambiguous_revision: {len(revisions)} revisions")
    oldest = revisions[-1]["uid"]
    reverted = cli("revert", oldest[:8], login=login)
    assert reverted.exit_code == 0 and f"reverted to {oldest}:" in reverted.stdout


def readme_failover_commands() -> list[list[str]]:
    """The README's failover example, one argv per command, `crdtmds` dropped."""
    text = README.read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "--remember" in b)
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True)[1:] for line in lines if line.strip()]


@pytest.mark.slow
def test_the_readme_failover_example_as_written(cluster: LocalCluster, tmp_path: Path) -> None:
    login = tmp_path / "readme.json"
    servers = {"ws://eu1.example:7400": cluster.urls[0], "ws://us1.example:7400": cluster.urls[1]}
    commands = [[servers.get(a, a) for a in argv] for argv in readme_failover_commands()]
    assert commands[-1] == ["logout"] and ["session", "publish"] in commands
    killed = False
    for argv in commands:
        if argv[0] == "rulebase" and not killed:  # after the publish: server 1 dies
            cluster.servers[0].kill()
            killed = True
        asks = argv[0] == "login"  # the password is typed (here: given) only to `login`
        result = cli(*argv, login=login, password=cluster.password if asks else None)
        assert result.exit_code == 0, (argv, result.output)
        if argv[0] == "rulebase":
            assert "warning: lost server" in result.stderr
            assert json.loads(result.stdout)["name"] == "Network"
    assert killed
