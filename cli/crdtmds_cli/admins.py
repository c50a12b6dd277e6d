"""`crdtmds admin`: administrators and their permissions; `crdtmds passwd`: one's own
password."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from crdtmds.client import Client
from crdtmds_cli.calls import all_pages, load_login, with_login
from crdtmds_cli.login_file import login_file_path
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
            ["Name", "Superuser", "Locked", "Domains"],
            [
                [a["name"], a.get("superuser"), bool(a.get("locked")), _grants_text(a)]
                for a in reply["objects"]
            ],
        )

    with_login(login_file, work)


@admin_app.command("show", cls=CliCommand)
def admin_show(
    name: Annotated[str, typer.Argument(help="The administrator's login name.")],
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Show one administrator (yourself, or anyone for a superuser)."""

    async def work(client: Client) -> None:
        reply = await client.call("show-administrator", name=name)
        if as_json:
            echo_json(reply)
            return
        _describe(reply)

    with_login(login_file, work)


@admin_app.command("set", cls=CliCommand)
def admin_set(
    name: Annotated[str, typer.Argument(help="The administrator's login name.")],
    password: Annotated[
        str | None,
        typer.Option("--password", show_default=False, help="A new password for them."),
    ] = None,
    old_password: Annotated[
        str | None,
        typer.Option(
            "--old-password",
            show_default=False,
            help="Your current password, when NAME is you (asked if missing).",
        ),
    ] = None,
    disable: Annotated[
        bool, typer.Option("--disable", help="Lock them out: their logins end on every server.")
    ] = False,
    enable: Annotated[bool, typer.Option("--enable", help="Let them log in again.")] = False,
    superuser: Annotated[
        bool | None,
        typer.Option("--superuser/--no-superuser", show_default=False, help="Superuser or not."),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option(
            "--domain",
            help="DOMAIN=read-only or DOMAIN=read-write (repeat; replaces all their domains).",
        ),
    ] = None,
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Change an administrator (superusers; anyone may change their own password)."""
    if disable and enable:
        raise typer.BadParameter("give --disable or --enable, not both", param_hint="--disable")
    params: dict[str, Any] = {"name": name}
    if password is not None:
        params["password"] = password
    if disable or enable:
        params["locked"] = disable
    if superuser is not None:
        params["superuser"] = superuser
    if domain is not None:
        params["domains"] = dict(_grant(text) for text in domain)
    if len(params) == 1:
        raise typer.BadParameter(
            "give what to change: --password, --disable, --enable, --superuser, "
            "--no-superuser or --domain",
            param_hint="NAME",
        )
    if password is not None and name == _own_name(login_file):
        params["old-password"] = old_password or typer.prompt(
            "Your current password", hide_input=True
        )

    async def work(client: Client) -> None:
        reply = await client.call("set-administrator", **params)
        if as_json:
            echo_json(reply)
            return
        say(f"changed administrator {reply['name']}")
        _describe(reply)

    with_login(login_file, work)


@admin_app.command("delete", cls=CliCommand)
def admin_delete(
    name: Annotated[str, typer.Argument(help="The administrator's login name.")],
    login_file: LoginFileOption = None,
) -> None:
    """Delete an administrator (superusers only): their logins end on every server and
    their unpublished drafts are discarded."""

    async def work(client: Client) -> None:
        await client.call("delete-administrator", name=name)
        say(f"deleted administrator {name}")

    with_login(login_file, work)


def passwd(
    old_password: Annotated[
        str | None,
        typer.Option(
            "--old-password",
            envvar="CRDTMDS_PASSWORD",
            show_default=False,
            help="Your current password (default: $CRDTMDS_PASSWORD, else asked).",
        ),
    ] = None,
    new_password: Annotated[
        str | None,
        typer.Option(
            "--new-password",
            envvar="CRDTMDS_NEW_PASSWORD",
            show_default=False,
            help="The new password (default: $CRDTMDS_NEW_PASSWORD, else asked twice).",
        ),
    ] = None,
    login_file: LoginFileOption = None,
) -> None:
    """Change your own password, on every server."""
    path = login_file_path(login_file)
    user = load_login(path).user
    if old_password is None:
        old_password = typer.prompt(f"Current password for {user}", hide_input=True)
    if new_password is None:
        new_password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)

    async def work(client: Client) -> None:
        await client.call(
            "set-administrator", name=user, password=new_password, **{"old-password": old_password}
        )

    with_login(login_file, work)
    stored = load_login(path)
    if stored.password is not None:  # kept by --remember-password: keep the new one
        stored.password = new_password
        stored.save(path)
    say(f"changed the password of {user}")


def _own_name(login_file: Any) -> str:
    return load_login(login_file_path(login_file)).user


def _grants_text(admin: dict[str, Any]) -> str:
    return ", ".join(f"{d}={p}" for d, p in sorted(admin.get("domains", {}).items()))


def _describe(admin: dict[str, Any]) -> None:
    echo_table(
        ["Name", "Superuser", "Locked", "Domains"],
        [[admin["name"], admin.get("superuser"), bool(admin.get("locked")), _grants_text(admin)]],
    )


def _grant(text: str) -> tuple[str, str]:
    domain, equals, level = text.partition("=")
    if not equals or not domain or level not in ("read-only", "read-write"):
        raise typer.BadParameter("use DOMAIN=read-only or DOMAIN=read-write", param_hint="--domain")
    return domain, level


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
    app.command("passwd", cls=CliCommand)(passwd)
