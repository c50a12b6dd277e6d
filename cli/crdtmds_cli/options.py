"""Option types shared by several command groups, and the command classes every command
and group of `crdtmds` is built with.

The classes exist for what typer does not offer per option: boolean flags shown as
flags in `--help` (without a `<bool>` value), `--session-file`, the old name of
`--login-file`, accepted but not shown, and help laid out by click rather than rich: at
80 columns rich squeezes the option column and cuts long option names
(`--max-documents-per-…`), while click puts a long name on a line of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

LOGIN_FILE_PARAMETER = "login_file"
HIDDEN_LOGIN_FILE_ALIAS = "--session-file"

LoginFileOption = Annotated[
    Path | None,
    typer.Option(
        "--login-file",
        envvar=["CRDTMDS_LOGIN_FILE", "CRDTMDS_SESSION_FILE"],
        help="The login file written by `crdtmds login` (default: ~/.config/crdtmds/session.json).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the server's JSON reply.")]
PublishOption = Annotated[
    bool, typer.Option("--publish", help="Publish the session right after this change.")
]
CommentsOption = Annotated[str | None, typer.Option("--comments", help="Free text.")]
ColorOption = Annotated[str | None, typer.Option("--color", help="Color name, e.g. 'red'.")]
TagsOption = Annotated[
    list[str] | None, typer.Option("--tag", help="A tag (repeat for several; replaces all).")
]
NewNameOption = Annotated[str | None, typer.Option("--new-name", help="Rename the object.")]
FilterOption = Annotated[
    str | None, typer.Option("--filter", help="Only names containing this text.")
]
LimitOption = Annotated[
    int | None, typer.Option("--limit", min=1, help="Show at most this many (default: all).")
]
DomainReadOption = Annotated[
    str | None,
    typer.Option("--domain", help="Read this domain instead of the one logged in to."),
]
LayerOption = Annotated[str, typer.Option("--layer", help="Access layer name or uid.")]


def _show_flags_as_flags(params: list[Any]) -> None:
    """Give boolean flags an empty value name: typer would show them as `<bool>`."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class _FlagsAsFlags:
    """Boolean options, `--help` included, read as flags in `--help` (not `<bool>`)."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _show_flags_as_flags(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            _show_flags_as_flags([option])
        return option


class CliCommand(_FlagsAsFlags, TyperCommand):
    """A command whose flags read as flags and whose login file has its old name too."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super(TyperCommand, self).format_help(ctx, formatter)  # click's, not rich's

    def make_parser(self, ctx: Any) -> Any:
        parser = super().make_parser(ctx)
        for param in self.params:
            if param.name == LOGIN_FILE_PARAMETER:
                # Scripts and tests written before the rename keep working.
                parser.add_option(
                    obj=param, opts=[HIDDEN_LOGIN_FILE_ALIAS], dest=param.name, nargs=1
                )
        return parser


class CliGroup(_FlagsAsFlags, TyperGroup):
    """A group whose `--help` reads as a flag."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super(TyperGroup, self).format_help(ctx, formatter)  # click's, not rich's


def group(help_text: str) -> typer.Typer:
    """A command group (`crdtmds host ...`)."""
    return typer.Typer(help=help_text, no_args_is_help=True, cls=CliGroup)


def add_command(app: typer.Typer, name: str, function: Callable[..., Any]) -> None:
    """Register `function` as the command `name` of `app`."""
    app.command(name, cls=CliCommand)(function)


def command_from(
    name: str, doc: str, parameters: list[inspect.Parameter], body: Callable[..., None]
) -> Callable[..., None]:
    """A function typer reads as a command: `parameters` as its signature, `doc` as help."""

    def command(**values: Any) -> None:
        body(**values)

    command.__name__ = name
    command.__doc__ = doc
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return command


def keyword(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    """A keyword parameter of a generated command."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )
