"""`crdtmds apply`: a file of API commands run in one session and published together.

Only session commands may be in the file: edits of the domain's objects and rules, and
reads. Everything else (`login`, `publish`, `add-domain`, `add-administrator`, ...) is
refused before anything runs; publishing is `--publish`, the default. A failed entry
discards what the file applied, unless `--keep-on-error`; Ctrl-C says how many entries ran
(they stay in the session) and exits 130.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from crdtmds.api_socket import ApiError
from crdtmds.client import Client, OutcomeUnknown, SessionLeftBehind
from crdtmds_cli.calls import fail, publish_now, with_login
from crdtmds_cli.login_file import CliFailure
from crdtmds_cli.options import LoginFileOption, add_command
from crdtmds_cli.output import say

INTERRUPTED = 130
USAGE = 2
POLICY_TYPES = frozenset({
    "host", "network", "address-range", "group", "service-tcp", "service-udp",
    "access-rule", "access-section", "access-layer",
})  # fmt: skip
READ_COMMANDS = frozenset({"where-used", "verify-policy"})
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Progress:
    """How far the file got: entries that replied, and whether one was in flight."""

    total: int
    done: int = 0
    in_flight: bool = False


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
    keep_on_error: Annotated[
        bool,
        typer.Option(
            "--keep-on-error/--discard-on-error",
            help="On an error, keep what the file applied in the session "
            "(default: discard it).",
        ),
    ] = False,
    login_file: LoginFileOption = None,
) -> None:
    """Run a file of API commands in one session and publish them together.

    Each entry is {command: add-host, params: {name: web, ipv4-address: 192.0.2.10}}.
    It stops at the first error, names the entry, discards what it applied (unless
    --keep-on-error) and publishes nothing.
    """
    entries = _read_entries(file)
    progress = Progress(len(entries))

    async def work(client: Client) -> None:
        session = await client.call("show-session")
        if session.get("changes"):
            raise CliFailure(
                "err_session_not_empty",
                f"the session already holds {session['changes']} unpublished change(s): "
                "publish or discard them first (`crdtmds session show`)",
            )
        await _apply_entries(client, entries, keep_on_error, progress)
        say(f"applied {len(entries)} command(s)")
        if publish:
            await publish_now(client, comments)

    try:
        with_login(login_file, work)
    except KeyboardInterrupt:
        _report_interrupt(progress)


def _report_interrupt(progress: Progress) -> None:
    ran = f"{progress.done} of {progress.total} entries ran"
    where = "; they are in the session, unpublished" if progress.done else ""
    flight = (
        f"; entry {progress.done + 1} was sent and may or may not be in the session"
        if progress.in_flight
        else ""
    )
    say(
        f"interrupted: {ran}{where}{flight}. See `crdtmds session show`, then publish or "
        "discard.",
        err=True,
    )
    raise typer.Exit(INTERRUPTED)


def _read_entries(file: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.load(file.read_text(), Loader=YamlLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc}", param_hint="FILE") from None
    if not isinstance(data, list):
        raise typer.BadParameter(
            "the file must hold a list of {command, params}", param_hint="FILE"
        )
    refused: list[str] = []
    for index, entry in enumerate(data, start=1):
        command = entry.get("command") if isinstance(entry, dict) else None
        params = entry.get("params", {}) if isinstance(entry, dict) else None
        if not isinstance(command, str) or not isinstance(params, dict | None):
            raise typer.BadParameter(
                f"entry {index} needs a 'command' string and a 'params' mapping", param_hint="FILE"
            )
        if not is_session_command(command):
            refused.append(f"entry {index} ({command})")
    if refused:
        fail(
            "err_not_session_command",
            f"{', '.join(refused)}: not session commands, so nothing was run. A file holds "
            "edits of objects and rules, and reads; --publish (the default) publishes it; "
            "logins, domains and administrators have their own commands",
            USAGE,
        )
    return data


def is_session_command(command: str) -> bool:
    """An edit of the domain's policy in the session, or a read."""
    verb, _, noun = command.partition("-")
    if verb in ("add", "set", "delete"):
        return noun in POLICY_TYPES
    return verb == "show" or command in READ_COMMANDS


async def _apply_entries(
    client: Client, entries: list[dict[str, Any]], keep_on_error: bool, progress: Progress
) -> None:
    with typer.progressbar(entries, label="applying", file=sys.stderr) as bar:
        for index, entry in enumerate(bar, start=1):
            progress.in_flight = True
            try:
                await client.call(entry["command"], **(entry.get("params") or {}))
            except (OutcomeUnknown, SessionLeftBehind):
                raise  # the server was lost: there is nothing here to discard
            except ApiError as exc:
                progress.in_flight = False
                outcome = await _after_failed_entry(client, keep_on_error, index)
                raise CliFailure(
                    exc.code, f"entry {index} ({entry['command']}): {exc.message}; {outcome}"
                ) from None
            progress.in_flight = False
            progress.done = index


async def _after_failed_entry(client: Client, keep_on_error: bool, index: int) -> str:
    if index == 1 and not client.unpublished:
        return "nothing was applied"
    if keep_on_error:
        return (
            f"entries 1-{index - 1} stay unpublished in the session (--keep-on-error): "
            "`crdtmds session show`, then publish or discard"
        )
    try:
        reply = await client.call("discard")
    except ApiError as exc:
        return f"the discard failed too ({exc.code}): check `crdtmds session show`"
    count = reply.get("number-of-discarded-changes", 0)
    return f"discarded {count} change(s) of entries 1-{index - 1} (--keep-on-error keeps them)"


def register(app: typer.Typer) -> None:
    add_command(app, "apply", apply_command)
