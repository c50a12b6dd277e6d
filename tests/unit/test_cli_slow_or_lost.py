"""The command line tells a slow reply from a lost server, and reports a publish or revert
whose reply was lost as unknown (exit 3), never as failed: against scripted `/api`
stand-ins on loopback (`fake_api.FakeApi`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crdtmds_cli.calls import OUTCOME_UNKNOWN
from crdtmds_cli.login_file import StoredLogin
from crdtmds_cli.main import app
from typer.testing import CliRunner, Result
from websockets.asyncio.server import ServerConnection

from tests.unit.fake_api import FakeApi, Handler

REVISION = "0b7a1c2e-0000-4000-8000-000000000001"


def run_cli(*args: str, login: Path, env: dict[str, str] | None = None) -> Result:
    environment = {"CRDTMDS_PASSWORD": "", **(env or {})}
    return CliRunner().invoke(app, [*args, "--login-file", str(login)], env=environment)


def stored_login(path: Path, urls: list[str], **extra: Any) -> Path:
    StoredLogin(
        urls=[f"{u}/api" for u in urls], user="admin", sid="sid-1", server=f"{urls[0]}/api",
        domain="acme", session_uid="session-1", timeout=0.5, **extra,
    ).save(path)  # fmt: skip
    return path


async def published(_ws: ServerConnection, _request: dict[str, Any]) -> dict[str, Any]:
    return {"revision": {"uid": "rev-1", "changes": 1}}


def slow(seconds: float, then: Handler = published) -> Handler:
    async def handler(ws: ServerConnection, request: dict[str, Any]) -> dict[str, Any] | None:
        await asyncio.sleep(seconds)
        return await then(ws, request)

    return handler


async def reset(ws: ServerConnection, _request: dict[str, Any]) -> None:
    ws.transport.abort()  # the server process died with the request in hand


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    with FakeApi({}) as api:
        yield api


def test_a_slow_publish_is_waited_for_with_progress(fake: FakeApi, tmp_path: Path) -> None:
    fake.handlers["publish"] = slow(2.0)
    result = run_cli("session", "publish", login=stored_login(tmp_path / "l.json", [fake.url]))
    assert result.exit_code == 0, result.output
    assert "published revision rev-1" in result.stdout
    assert f"still waiting for {fake.url}/api (" in result.stderr
    assert "lost server" not in result.stderr


def test_a_publish_whose_server_resets_is_unknown_not_failed(
    fake: FakeApi, tmp_path: Path
) -> None:
    fake.handlers["publish"] = reset
    login = stored_login(tmp_path / "l.json", [fake.url])
    result = run_cli("session", "publish", login=login, env={"CRDTMDS_PASSWORD": "secret-pass"})
    assert result.exit_code == OUTCOME_UNKNOWN == 3, result.output
    assert result.stderr.splitlines()[-1] == (
        f"Error err_outcome_unknown: the publish may have succeeded on {fake.url}/api: check "
        "`crdtmds revisions` (a revision of session session-1 means it did) before running "
        "it again"
    )


def test_a_revert_lost_with_every_server_is_unknown(fake: FakeApi, tmp_path: Path) -> None:
    async def die(ws: ServerConnection, request: dict[str, Any]) -> None:
        fake._server.close(close_connections=False)  # refuse the re-login
        await reset(ws, request)

    fake.handlers["revert-to-revision"] = die
    login = stored_login(tmp_path / "l.json", [fake.url])
    result = run_cli("revert", REVISION, login=login, env={"CRDTMDS_PASSWORD": "secret-pass"})
    assert result.exit_code == 3, result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith(
        f"Error err_outcome_unknown: the revert may have succeeded on {fake.url}/api: "
    )
    assert "no server could be logged in to" in last


def test_a_silent_open_connection_counts_as_lost_after_the_reply_timeout(
    fake: FakeApi, tmp_path: Path
) -> None:
    fake.handlers["publish"] = slow(30.0)
    login = stored_login(tmp_path / "l.json", [fake.url], reply_timeout=1.5)
    result = run_cli("session", "publish", login=login)
    assert result.exit_code == 3, result.output
    assert "no reply within 1.5 s on an open connection" in result.stderr
    assert "still waiting for" in result.stderr


def test_failover_logs_in_with_crdtmds_password(tmp_path: Path) -> None:
    with FakeApi({}) as first, FakeApi({}) as second:
        login = stored_login(tmp_path / "l.json", [first.url, second.url])
        first.stop()
        moved = run_cli("host", "list", login=login, env={"CRDTMDS_PASSWORD": "secret-pass"})
        assert moved.exit_code == 0, moved.output
        assert "warning: lost server" in moved.stderr and second.seen[0] == "login"
        assert StoredLogin.load(login).server == f"{second.url}/api"
        assert "password" not in login.read_text()


def test_failover_without_a_password_names_the_flag_and_the_variable(tmp_path: Path) -> None:
    with FakeApi({}) as first, FakeApi({}) as second:
        login = stored_login(tmp_path / "l.json", [first.url, second.url])
        first.stop()
        result = run_cli("host", "list", login=login)
        assert result.exit_code == 1
        message = result.stderr.splitlines()[-1]
        assert message.startswith("Error err_login_required: ")
        assert "CRDTMDS_PASSWORD" in message and "--remember-password" in message
