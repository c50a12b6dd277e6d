"""`crdtmds start` options made from the `Limits` dataclass: one `--field-name` option per
field, with the field's default and, as help, its docstring.

The docstrings are read from the source with `ast` rather than kept in field metadata:
they stay where readers of `crdtmds/config.py` look for them, and a field added there
becomes an option without touching the command line.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import typing
from typing import Annotated, Any

import typer

from crdtmds.config import Limits
from crdtmds_cli.options import keyword

LOWEST: dict[str, int | float] = {
    "max_message_size": 1024,
    "max_sync_message_size": 1024,
    "handshake_timeout": 0.1,
    "idle_timeout": 0.1,
    "web_api_timeout": 0.1,
}
"""Smallest values a user may give where the type's own floor (1 or 0.0) is not enough:
smaller frames could not carry a handshake, and a zero timeout closes every connection."""


def field_docs() -> dict[str, str]:
    """Each `Limits` field's attribute docstring, on one line."""
    try:
        source = textwrap.dedent(inspect.getsource(Limits))
    except (OSError, TypeError):  # no source shipped: the options go without help
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def limit_parameters() -> list[inspect.Parameter]:
    """One command parameter per `Limits` field, in field order."""
    docs = field_docs()
    types = typing.get_type_hints(Limits)
    parameters = []
    for field in dataclasses.fields(Limits):
        kind = types[field.name]
        option = typer.Option(
            "--" + field.name.replace("_", "-"),
            min=LOWEST.get(field.name, 1 if kind is int else 0.0),
            help=docs.get(field.name) or field.name.replace("_", " ").capitalize() + ".",
        )
        parameters.append(keyword(field.name, Annotated[kind, option], field.default))
    return parameters


def limits_from(values: dict[str, Any]) -> Limits:
    """The `Limits` of the options given (`values` holds other parameters too)."""
    names = {field.name for field in dataclasses.fields(Limits)}
    return Limits(**{name: value for name, value in values.items() if name in names})
