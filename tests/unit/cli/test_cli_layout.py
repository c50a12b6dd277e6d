"""How the command line presents itself: the version, flags shown as flags, the login
file's old option name, the object commands built from one table, and `start` options
made from every `Limits` field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from crdtmds_cli.limit_options import field_docs
from crdtmds_cli.main import app
from crdtmds_cli.objects import OBJECT_KINDS
from typer.testing import CliRunner

import crdtmds
from crdtmds.config import Limits


def run(*args: str) -> typer.testing.Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"crdtmds {crdtmds.__version__}"


def test_flags_show_no_value_and_the_old_login_file_name_is_hidden() -> None:
    result = run("host", "list", "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert "--login-file" in result.stdout and "--session-file" not in result.stdout


def test_both_login_file_names_are_read(tmp_path: Path) -> None:
    for option in ("--login-file", "--session-file"):
        result = run("host", "list", option, str(tmp_path / "none.json"))
        assert result.exit_code == 1
        assert "err_not_logged_in" in result.stderr


def test_every_object_kind_has_its_five_commands() -> None:
    root = typer.main.get_command(app)
    for kind in OBJECT_KINDS:
        commands = root.commands[kind.command].commands  # type: ignore[attr-defined]
        assert sorted(commands) == ["add", "delete", "list", "set", "show"]


def test_every_limit_is_a_start_option_with_its_default_and_help() -> None:
    start = typer.main.get_command(app).commands["start"]  # type: ignore[attr-defined]
    options = {param.name: param for param in start.params}
    docs = field_docs()
    for field in dataclasses.fields(Limits):
        option = options[field.name]
        assert option.opts == ["--" + field.name.replace("_", "-")]
        assert option.default == field.default
        assert option.help == docs[field.name]  # the field's docstring, not a fallback
