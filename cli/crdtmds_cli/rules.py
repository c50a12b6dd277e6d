"""`crdtmds rule` and `crdtmds rulebase`: the ordered access rules of a layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from crdtmds.client import Client
from crdtmds_cli.calls import all_pages, publish_now, ref_key, with_login
from crdtmds_cli.options import (
    CliCommand,
    DomainReadOption,
    JsonOption,
    LayerOption,
    LimitOption,
    LoginFileOption,
    PublishOption,
    group,
)
from crdtmds_cli.output import echo_json, echo_record, echo_table, say
from crdtmds_cli.rulebase_view import COLUMNS, table_rows

rule_app = group("Access rules of a layer (default layer: Network).")
rulebase_app = group("The ordered rules of an access layer.")

RuleArgument = Annotated[str, typer.Argument(help="The rule's number, uid or name.")]
SourcesOption = Annotated[
    list[str] | None, typer.Option("--source", help="Source object (repeat; default Any).")
]
DestinationsOption = Annotated[
    list[str] | None,
    typer.Option("--destination", help="Destination object (repeat; default Any)."),
]
ServicesOption = Annotated[
    list[str] | None, typer.Option("--service", help="Service (repeat; default Any).")
]
TrackOption = Annotated[str | None, typer.Option("--track", help="None or Log.")]
RuleCommentsOption = Annotated[str | None, typer.Option("--comments", help="Free text.")]


@rule_app.command("add", cls=CliCommand)
def rule_add(
    name: Annotated[str, typer.Option("--name", help="The rule's name.")] = "",
    position: Annotated[
        str, typer.Option("--position", help="top, bottom, a number, above:RULE or below:RULE.")
    ] = "bottom",
    source: SourcesOption = None,
    destination: DestinationsOption = None,
    service: ServicesOption = None,
    action: Annotated[str, typer.Option("--action", help="Accept, Drop or Reject.")] = "Drop",
    track: TrackOption = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it disabled.")] = False,
    comments: RuleCommentsOption = None,
    layer: LayerOption = "Network",
    publish: PublishOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Add an access rule to the session."""
    params: dict[str, Any] = {
        "layer": layer,
        "position": _position(position, "--position"),
        "name": name,
        "action": action,
    }
    params.update(_rule_fields(source, destination, service, track, comments))
    if disabled:
        params["enabled"] = False
    _write_rule(login_file, "add-access-rule", params, publish)


@rule_app.command("set", cls=CliCommand)
def rule_set(
    rule: RuleArgument,
    new_name: Annotated[str | None, typer.Option("--new-name", help="Rename the rule.")] = None,
    source: SourcesOption = None,
    destination: DestinationsOption = None,
    service: ServicesOption = None,
    action: Annotated[str | None, typer.Option("--action", help="Accept, Drop or Reject.")] = None,
    track: TrackOption = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Enable or disable the rule.")
    ] = None,
    comments: RuleCommentsOption = None,
    layer: LayerOption = "Network",
    publish: PublishOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Change an access rule in the session (only the options given)."""
    params: dict[str, Any] = {"layer": layer, **_rule_ref(rule)}
    params.update(_rule_fields(source, destination, service, track, comments))
    if new_name is not None:
        params["new-name"] = new_name
    if action is not None:
        params["action"] = action
    if enabled is not None:
        params["enabled"] = enabled
    _write_rule(login_file, "set-access-rule", params, publish)


@rule_app.command("move", cls=CliCommand)
def rule_move(
    rule: RuleArgument,
    to: Annotated[
        str, typer.Option("--to", help="top, bottom, a number, above:RULE or below:RULE.")
    ],
    layer: LayerOption = "Network",
    publish: PublishOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Move an access rule in the session."""
    params = {"layer": layer, **_rule_ref(rule), "new-position": _position(to, "--to")}
    _write_rule(login_file, "set-access-rule", params, publish)


@rule_app.command("delete", cls=CliCommand)
def rule_delete(
    rule: RuleArgument,
    layer: LayerOption = "Network",
    publish: PublishOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Delete an access rule in the session."""
    _write_rule(login_file, "delete-access-rule", {"layer": layer, **_rule_ref(rule)}, publish)


@rule_app.command("show", cls=CliCommand)
def rule_show(
    rule: RuleArgument,
    layer: LayerOption = "Network",
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Show one access rule as this session sees it."""

    async def work(client: Client) -> None:
        params = {"layer": layer, **_rule_ref(rule), **({"domain": domain} if domain else {})}
        reply = await client.call("show-access-rule", **params)
        echo_json(reply) if as_json else echo_record(reply)

    with_login(login_file, work)


@rulebase_app.command("show", cls=CliCommand)
def rulebase_show(
    layer: LayerOption = "Network",
    limit: LimitOption = None,
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    login_file: LoginFileOption = None,
) -> None:
    """Show the rules of a layer in order, with object names."""

    async def work(client: Client) -> None:
        params = {"name": layer, **({"domain": domain} if domain else {})}
        reply = await all_pages(client, "show-access-rulebase", "rulebase", limit, **params)
        if as_json:
            echo_json(reply)
            return
        say(f"layer {reply['name']}: {reply['total']} rule(s)")
        echo_table(COLUMNS, table_rows(reply))

    with_login(login_file, work)


def _rule_fields(
    source: list[str] | None,
    destination: list[str] | None,
    service: list[str] | None,
    track: str | None,
    comments: str | None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in (("source", source), ("destination", destination), ("service", service)):
        if value is not None:
            fields[key] = value
    if track is not None:
        fields["track"] = track
    if comments is not None:
        fields["comments"] = comments
    return fields


def _rule_ref(ref: str) -> dict[str, Any]:
    if ref.isascii() and ref.isdigit():
        return {"rule-number": int(ref)}
    return {ref_key(ref): ref}


def _position(text: str, option: str) -> Any:
    value = text.strip()
    if value in ("top", "bottom"):
        return value
    if value.isascii() and value.isdigit():
        return int(value)
    where, colon, anchor = value.partition(":")
    if colon and where in ("above", "below") and anchor:
        return {where: int(anchor) if anchor.isascii() and anchor.isdigit() else anchor}
    raise typer.BadParameter(
        "use top, bottom, a number, above:RULE or below:RULE", param_hint=option
    )


def _write_rule(
    login_file: Path | None, command: str, params: dict[str, Any], publish: bool
) -> None:
    async def work(client: Client) -> None:
        reply = await client.call(command, **params)
        if command == "delete-access-rule":
            say("deleted rule")
        else:
            done = "added" if command.startswith("add") else "changed"
            label = f" '{reply['name']}'" if reply.get("name") else ""
            say(f"{done} rule {reply['rule-number']}{label} ({reply['uid']})")
        if publish:
            await publish_now(client)

    with_login(login_file, work)


def register(app: typer.Typer) -> None:
    app.add_typer(rule_app, name="rule")
    app.add_typer(rulebase_app, name="rulebase")
