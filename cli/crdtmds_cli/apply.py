"""`crdtmds apply`: a file of API commands run in one session and published together."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from crdtmds.api_socket import ApiError
from crdtmds.client import Client
from crdtmds_cli.calls import publish_now, with_login
from crdtmds_cli.login_file import CliFailure
from crdtmds_cli.options import (
    LoginFileOption,
    add_command,
)
from crdtmds_cli.output import say


def apply_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="YAML or JSON list of {command, params}.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish once everything applied.")
    ] = True,
    comments: Annotated[
        str | None, typer.Option("--comments", help="Comment of the published revision.")
    ] = None,
    discard_on_error: Annotated[
        bool,
        typer.Option(
            "--discard-on-error",
            help="On an error, discard what this file had applied (default: leave it "
            "unpublished in the session).",
        ),
    ] = False,
    login_file: LoginFileOption = None,
) -> None:
    """Run a file of API commands in one session and publish them together.

    Each entry is {command: add-host, params: {name: web, ipv4-address: 192.0.2.10}}.
    It stops at the first error, names the entry, and publishes nothing.
    """
    entries = _read_entries(file)

    async def work(client: Client) -> None:
        session = await client.call("show-session")
        if session.get("changes"):
            raise CliFailure(
                "err_session_not_empty",
                f"the session already holds {session['changes']} unpublished change(s): "
                "publish or discard them first (`crdtmds session show`)",
            )
        await _apply_entries(client, entries, discard_on_error)
        say(f"applied {len(entries)} command(s)")
        if publish:
            await publish_now(client, comments)

    with_login(login_file, work)


def _read_entries(file: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc}", param_hint="FILE") from None
    if not isinstance(data, list):
        raise typer.BadParameter(
            "the file must hold a list of {command, params}", param_hint="FILE"
        )
    for index, entry in enumerate(data, start=1):
        command = entry.get("command") if isinstance(entry, dict) else None
        params = entry.get("params", {}) if isinstance(entry, dict) else None
        if not isinstance(command, str) or not isinstance(params, dict | None):
            raise typer.BadParameter(
                f"entry {index} needs a 'command' string and a 'params' mapping", param_hint="FILE"
            )
    return data


async def _apply_entries(
    client: Client, entries: list[dict[str, Any]], discard_on_error: bool
) -> None:
    with typer.progressbar(entries, label="applying", file=sys.stderr) as bar:
        for index, entry in enumerate(bar, start=1):
            try:
                await client.call(entry["command"], **(entry.get("params") or {}))
            except ApiError as exc:
                outcome = await _after_failed_entry(client, discard_on_error, index)
                raise CliFailure(
                    exc.code, f"entry {index} ({entry['command']}): {exc.message}; {outcome}"
                ) from None


async def _after_failed_entry(client: Client, discard_on_error: bool, index: int) -> str:
    if index == 1 and not client.unpublished:
        return "nothing was applied"
    if not discard_on_error:
        return (
            f"entries 1-{index - 1} stay unpublished in the session: "
            "`crdtmds session show`, then publish or discard"
        )
    with contextlib.suppress(ApiError):
        reply = await client.call("discard")
        return f"discarded {reply.get('number-of-discarded-changes', 0)} change(s)"
    return "the discard failed too: check `crdtmds session show`"


def register(app: typer.Typer) -> None:
    add_command(app, "apply", apply_command)
