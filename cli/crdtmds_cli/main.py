"""Entry point of the `crdtmds` command: assembles the command groups."""

from __future__ import annotations

from typing import Annotated

import typer

import crdtmds
from crdtmds_cli import (
    admins,
    apply,
    demo,
    domains,
    login,
    objects,
    revisions,
    rules,
    server,
    servers,
    session,
)
from crdtmds_cli.options import CliGroup

app = typer.Typer(
    name="crdtmds",
    help="Active/active multi-domain security management configuration store.",
    no_args_is_help=True,
    add_completion=False,
    cls=CliGroup,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"crdtmds {crdtmds.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Active/active multi-domain security management configuration store."""


# The order of the command list in `crdtmds --help`.
GROUPS = (server, servers, login, revisions, apply, demo, objects, rules, session, domains, admins)
for group in GROUPS:
    group.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
