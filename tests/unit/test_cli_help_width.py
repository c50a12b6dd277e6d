"""`COLUMNS=80 crdtmds ... --help` never cuts an option name: every name of every option
of every command appears whole in its help."""

from __future__ import annotations

import re
from typing import Any

import typer
from crdtmds_cli.main import app
from typer.testing import CliRunner


def commands() -> list[tuple[list[str], Any]]:
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_option_names_are_whole_at_80_columns() -> None:
    cut: list[str] = []
    for path, command in commands():
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        words = set(re.findall(r"--[a-z][a-z0-9-]*", result.stdout))
        assert all(len(line) <= 80 for line in result.stdout.splitlines()), path
        for param in command.params:
            for name in [*param.opts, *getattr(param, "secondary_opts", [])]:
                if name.startswith("--") and name not in words:
                    cut.append(f"{' '.join(path)}: {name}")
    assert cut == []
