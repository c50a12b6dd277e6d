"""`crdtmds session`: the administrator's draft of unpublished changes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from crdtmds.client import Client
from crdtmds_cli.calls import publish_now, with_login
from crdtmds_cli.options import (
    CliCommand,
    JsonOption,
    LoginFileOption,
    group,
)
from crdtmds_cli.output import cell, echo_json, echo_table, say, summary_of

session_app = group("The session: your unpublished changes.")


@session_app.command("show", cls=CliCommand)
def session_show(as_json: JsonOption = False, login_file: LoginFileOption = None) -> None:
    """Show the session and every change it would publish."""

    async def work(client: Client) -> None:
        session = await client.call("show-session")
        changes = await client.call("show-changes") if session.get("domain") else {}
        if as_json:
            echo_json({"session": session, "changes": changes})
            return
        domain = (session.get("domain") or {}).get("name", "the system-wide view")
        say(
            f"session {session['uid']} of {session['user-name']} on {domain} "
            f"(server {client.server}): {changes.get('total', 0)} change(s)"
        )
        echo_table(["Change", "Type", "Name", "Details"], _change_rows(changes))

    with_login(login_file, work)


def _change_rows(changes: dict[str, Any]) -> list[list[Any]]:
    names = {o["uid"]: o.get("name") or o["uid"] for o in changes.get("objects-dictionary", [])}

    def named(value: Any) -> Any:
        # Member and rule-column uids, shown by name.
        if isinstance(value, list):
            return [names.get(v, v) if isinstance(v, str) else v for v in value]
        return value

    rows: list[list[Any]] = []
    for kind, key in (
        ("added", "added-objects"),
        ("modified", "modified-objects"),
        ("deleted", "deleted-objects"),
    ):
        for item in changes.get(key, []):
            details = item.get("fields", {})
            text = "; ".join(
                f"{f}: {cell(named(v.get('old')))} -> {cell(named(v.get('new')))}"
                for f, v in details.items()
            )
            shown = {k: named(v) for k, v in item.items()}
            rows.append([kind, item.get("type"), item.get("name"), text or summary_of(shown)])
    return rows


@session_app.command("publish", cls=CliCommand)
def session_publish(
    comments: Annotated[
        str | None, typer.Option("--comments", help="Comment stored with the revision.")
    ] = None,
    login_file: LoginFileOption = None,
) -> None:
    """Publish the session: its changes become visible and spread to every server."""

    async def work(client: Client) -> None:
        await publish_now(client, comments)

    with_login(login_file, work)


@session_app.command("discard", cls=CliCommand)
def session_discard(login_file: LoginFileOption = None) -> None:
    """Drop every unpublished change of the session."""

    async def work(client: Client) -> None:
        reply = await client.call("discard")
        say(f"discarded {reply.get('number-of-discarded-changes', 0)} change(s)")

    with_login(login_file, work)


def register(app: typer.Typer) -> None:
    app.add_typer(session_app, name="session")
