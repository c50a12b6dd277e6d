"""`crdtmds server`: the servers listed in the cluster document, and removing one."""

from __future__ import annotations

from typing import Annotated

import typer

from crdtmds.client import Client
from crdtmds_cli.calls import all_pages, with_login
from crdtmds_cli.options import CliCommand, JsonOption, LoginFileOption, group
from crdtmds_cli.output import echo_json, echo_table, say

server_app = group("Servers of the cluster: list them, remove one that is gone for good.")


@server_app.command("list", cls=CliCommand)
def server_list(as_json: JsonOption = False, login_file: LoginFileOption = None) -> None:
    """List the servers of the cluster document."""

    async def work(client: Client) -> None:
        reply = await all_pages(client, "show-servers", "objects", None)
        if as_json:
            echo_json(reply)
            return
        echo_table(
            ["Name", "URL", "Region", "Role", "Here", "Id"],
            [
                [s["name"], s.get("url"), s.get("region"), s.get("role"), s.get("this-server"),
                 s.get("server-id")]
                for s in reply["objects"]
            ],
        )  # fmt: skip

    with_login(login_file, work)


@server_app.command("remove", cls=CliCommand)
def server_remove(
    name: Annotated[str, typer.Argument(help="The server's name.")],
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Remove a server for good (superusers only): the others stop dialing it, `status`
    stops waiting for it, and it is refused if it comes back (to bring it back, wipe its
    data directory and `join` again). Not the server you are logged in to."""

    async def work(client: Client) -> None:
        reply = await client.call("delete-server", name=name)
        if as_json:
            echo_json(reply)
            return
        say(f"removed server {name} (id {reply['removed']['server-id']})")

    with_login(login_file, work)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")
