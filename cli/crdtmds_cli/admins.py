"""`crdtmds admin`: administrators and their permissions."""

from __future__ import annotations

from typing import Annotated

import typer

from crdtmds.client import Client
from crdtmds_cli.calls import all_pages, with_login
from crdtmds_cli.options import (
    CliCommand,
    JsonOption,
    LoginFileOption,
    group,
)
from crdtmds_cli.output import echo_json, echo_table, say

admin_app = group("Administrators and their permissions.")


@admin_app.command("add", cls=CliCommand)
def admin_add(
    name: Annotated[str, typer.Argument(help="The administrator's login name.")],
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="CRDTMDS_NEW_PASSWORD",
            show_default=False,
            help="Their password (default: $CRDTMDS_NEW_PASSWORD, else asked).",
        ),
    ] = None,
    superuser: Annotated[
        bool, typer.Option("--superuser", help="Full access to every domain and the cluster.")
    ] = False,
    domain: Annotated[
        list[str] | None,
        typer.Option(
            "--domain",
            help="DOMAIN=read-only or DOMAIN=read-write (repeat; '*' means every domain).",
        ),
    ] = None,
    login_file: LoginFileOption = None,
) -> None:
    """Add an administrator (superusers only); they can log in on every server."""
    grants = dict(_grant(text) for text in domain or [])
    if password is None:
        password = typer.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)

    async def work(client: Client) -> None:
        reply = await client.call(
            "add-administrator", name=name, password=password, superuser=superuser, domains=grants
        )
        say(f"added administrator {reply['name']}")

    with_login(login_file, work)


@admin_app.command("list", cls=CliCommand)
def admin_list(as_json: JsonOption = False, login_file: LoginFileOption = None) -> None:
    """List administrators (yourself only, unless you are a superuser)."""

    async def work(client: Client) -> None:
        reply = await all_pages(client, "show-administrators", "objects", None)
        if as_json:
            echo_json(reply)
            return
        echo_table(
            ["Name", "Superuser", "Domains"],
            [
                [
                    a["name"],
                    a.get("superuser"),
                    ", ".join(f"{d}={p}" for d, p in sorted(a.get("domains", {}).items())),
                ]
                for a in reply["objects"]
            ],
        )

    with_login(login_file, work)


def _grant(text: str) -> tuple[str, str]:
    domain, equals, level = text.partition("=")
    if not equals or not domain or level not in ("read-only", "read-write"):
        raise typer.BadParameter("use DOMAIN=read-only or DOMAIN=read-write", param_hint="--domain")
    return domain, level


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
