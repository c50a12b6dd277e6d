"""`crdtmds domain`: separate policies, each one Automerge document."""

from __future__ import annotations

from typing import Annotated

import typer

from crdtmds.client import Client
from crdtmds_cli.calls import all_pages, ref_key, with_login
from crdtmds_cli.options import (
    CliCommand,
    JsonOption,
    LoginFileOption,
    group,
)
from crdtmds_cli.output import echo_json, echo_table, say

domain_app = group("Domains: separate policies, each one Automerge document.")


@domain_app.command("add", cls=CliCommand)
def domain_add(
    name: Annotated[str, typer.Argument(help="Name of the new domain.")],
    login_file: LoginFileOption = None,
) -> None:
    """Create a domain (superusers only); it is on every server at once, no publish needed."""

    async def work(client: Client) -> None:
        reply = await client.call("add-domain", name=name)
        say(f"added domain {reply['name']} ({reply['uid']}) at {reply['url']}")

    with_login(login_file, work)


@domain_app.command("list", cls=CliCommand)
def domain_list(as_json: JsonOption = False, login_file: LoginFileOption = None) -> None:
    """List the domains you may read, with the automerge: URL to open each one."""

    async def work(client: Client) -> None:
        reply = await all_pages(client, "show-domains", "objects", None)
        if as_json:
            echo_json(reply)
            return
        echo_table(
            ["Name", "URL", "Here", "UID"],
            [[d["name"], d["url"], d.get("available"), d["uid"]] for d in reply["objects"]],
        )

    with_login(login_file, work)


@domain_app.command("rename", cls=CliCommand)
def domain_rename(
    name: Annotated[str, typer.Argument(help="The domain's name or uid.")],
    new_name: Annotated[str, typer.Argument(help="Its new name.")],
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Rename a domain (superusers only); permissions on it follow the new name."""

    async def work(client: Client) -> None:
        reply = await client.call("set-domain", **{ref_key(name): name, "new-name": new_name})
        if as_json:
            echo_json(reply)
            return
        say(f"renamed domain {name} to {reply['name']}")

    with_login(login_file, work)


@domain_app.command("delete", cls=CliCommand)
def domain_delete(
    name: Annotated[str, typer.Argument(help="The domain's name or uid.")],
    login_file: LoginFileOption = None,
) -> None:
    """Delete a domain and its whole policy from every server (superusers only). Open
    sessions on it end; it cannot be brought back."""

    async def work(client: Client) -> None:
        await client.call("delete-domain", **{ref_key(name): name})
        say(f"deleted domain {name}")

    with_login(login_file, work)


def register(app: typer.Typer) -> None:
    app.add_typer(domain_app, name="domain")
