"""Entry point of the `crdtmds` command: assembles the command groups."""

from __future__ import annotations

import typer

from crdtmds_cli import admin_commands, demo, server_commands

app = typer.Typer(
    name="crdtmds",
    help="Active/active multi-domain security management configuration store.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Active/active multi-domain security management configuration store."""


server_commands.register(app)
admin_commands.register(app)
demo.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
