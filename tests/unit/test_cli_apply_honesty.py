"""`crdtmds apply` does what it says: only session commands, a failed file discarded unless
`--keep-on-error`, Ctrl-C reported with what ran (exit 130); against a scripted `/api`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from crdtmds_cli import apply
from crdtmds_cli.login_file import StoredLogin
from crdtmds_cli.main import app
from typer.testing import CliRunner, Result
from websockets.asyncio.server import ServerConnection

from crdtmds.client import Client
from tests.unit.fake_api import ERROR, FakeApi

HOSTS = [
    {"command": "add-host", "params": {"name": f"h{n}", "ipv4-address": f"192.0.2.{n}"}}
    for n in (1, 2, 3)
]


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    added: list[str] = []

    async def add_host(_ws: ServerConnection, request: dict[str, Any]) -> dict[str, Any]:
        name = request["params"]["name"]
        if name == "broken":
            return {ERROR: {"code": "err_validation_failed", "message": "bad address"}}
        added.append(name)
        return {"uid": f"uid-{name}", "name": name}

    async def discard(_ws: ServerConnection, _request: dict[str, Any]) -> dict[str, Any]:
        count, added[:] = len(added), []
        return {"number-of-discarded-changes": count}

    with FakeApi({"add-host": add_host, "discard": discard}) as api:
        yield api


def apply_file(fake: FakeApi, tmp_path: Path, entries: list[Any], *options: str) -> Result:
    login = tmp_path / "login.json"
    StoredLogin(urls=[f"{fake.url}/api"], user="admin", sid="sid-1", server=f"{fake.url}/api",
                domain="acme", session_uid="session-1", timeout=2).save(login)  # fmt: skip
    file = tmp_path / "entries.json"
    file.write_text(json.dumps(entries))
    return CliRunner().invoke(app, ["apply", str(file), *options, "--login-file", str(login)])


def test_commands_outside_the_session_are_refused_before_anything_runs(
    fake: FakeApi, tmp_path: Path
) -> None:
    entries = [*HOSTS, {"command": "publish"}, {"command": "add-domain", "params": {"name": "x"}},
               {"command": "login", "params": {}}]  # fmt: skip
    result = apply_file(fake, tmp_path, entries)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "Error err_not_session_command: entry 4 (publish), entry 5 (add-domain), entry 6 "
        "(login): not session commands, so nothing was run."
    )
    assert fake.seen == []


def test_a_failed_apply_discards_unless_kept(fake: FakeApi, tmp_path: Path) -> None:
    broken = {"command": "add-host", "params": {"name": "broken", "ipv4-address": "x"}}
    result = apply_file(fake, tmp_path, [*HOSTS[:2], broken, HOSTS[2]])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error err_validation_failed: entry 3 (add-host): bad address; discarded 2 change(s) "
        "of entries 1-2 (--keep-on-error keeps them)"
    )
    kept = apply_file(fake, tmp_path, [*HOSTS[:2], broken], "--keep-on-error")
    assert kept.exit_code == 1
    assert "entries 1-2 stay unpublished in the session (--keep-on-error)" in kept.stderr
    assert fake.seen.count("discard") == 1 and "publish" not in fake.seen


def test_ctrl_c_says_how_many_entries_ran(
    fake: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_call = Client.call

    async def call(self: Client, command: str, **params: Any) -> dict[str, Any]:
        if params.get("name") == "h3":
            raise KeyboardInterrupt
        return await real_call(self, command, **params)

    monkeypatch.setattr(Client, "call", call)
    result = apply_file(fake, tmp_path, HOSTS)
    assert result.exit_code == 130, result.output
    assert (
        "interrupted: 2 of 3 entries ran; they are in the session, unpublished; entry 3 was "
        "sent and may or may not be in the session." in result.stderr
    )
    assert "publish" not in fake.seen


def test_yaml_is_read_with_the_c_loader_when_there_is_one() -> None:
    assert apply.YamlLoader is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
