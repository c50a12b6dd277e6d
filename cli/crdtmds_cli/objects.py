"""Object commands (`host`, `network`, `range`, `group`, `service`), built from one table.

Each entry of `OBJECT_KINDS` names an object kind's API type(s) and the options its
`add` and `set` take; `register` turns every entry into `add`, `set`, `delete`, `show`
and `list` commands with the same options, help texts and outputs for every kind.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from crdtmds.api_socket import ApiError
from crdtmds.client import Client
from crdtmds_cli.calls import all_pages, domain_param, publish_now, ref_key, with_login
from crdtmds_cli.login_file import CliFailure
from crdtmds_cli.options import (
    ColorOption,
    CommentsOption,
    DomainReadOption,
    FilterOption,
    JsonOption,
    LimitOption,
    LoginFileOption,
    NewNameOption,
    PublishOption,
    TagsOption,
    add_command,
    command_from,
    group,
    keyword,
)
from crdtmds_cli.output import echo_json, echo_record, echo_table, say, summary_of

ToParams = Callable[[Any], dict[str, Any]]


def api_param(name: str) -> ToParams:
    """An option whose value is sent as the API parameter `name`."""
    return lambda value: {name: value}


@dataclass(frozen=True)
class ObjectOption:
    """One option of a kind's `add` and/or `set` (None help: not taken by that command)."""

    name: str
    flag: str
    add_help: str | None
    set_help: str | None
    to_params: ToParams
    annotation: Any = str
    required_on_add: bool = True
    add_default: Any = None
    """Sent on `add` when the option is omitted (None: nothing is sent)."""


@dataclass(frozen=True)
class ObjectKind:
    """A command group of object commands and the API types it works on."""

    command: str
    noun: str
    article: str
    group_help: str
    api_types: tuple[str, ...]
    plural: str
    options: tuple[ObjectOption, ...]
    add_help: str
    list_help: str

    @property
    def has_protocol(self) -> bool:
        """Several API types, told apart by `--protocol` (TCP and UDP services)."""
        return len(self.api_types) > 1


def _cidr(text: str) -> dict[str, Any]:
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a CIDR like 10.1.0.0/16", param_hint="--subnet"
        ) from None
    if "/" not in text:
        raise typer.BadParameter("give the mask length, e.g. 10.1.0.0/16", param_hint="--subnet")
    address, _, length = text.strip().partition("/")
    return {
        "subnet": address,
        "mask-length": int(length) if length.isdigit() else network.prefixlen,
    }


OBJECT_KINDS: tuple[ObjectKind, ...] = (
    ObjectKind(
        "host", "host", "a", "Hosts: one IPv4 and/or IPv6 address.", ("host",), "hosts",
        (ObjectOption("ip", "--ip", "IPv4 or IPv6 address.", "New IPv4 or IPv6 address.",
                      api_param("ip-address")),),
        "Add a host to the session.", "List the hosts, sorted by name.",
    ),
    ObjectKind(
        "network", "network", "a", "Networks: a subnet and its mask length.", ("network",),
        "networks",
        (ObjectOption("subnet", "--subnet", "CIDR, e.g. 10.1.0.0/16.", "New CIDR.", _cidr),),
        "Add a network to the session.", "List the networks, sorted by name.",
    ),
    ObjectKind(
        "range", "address range", "an", "Address ranges: a first and last address.",
        ("address-range",), "address-ranges",
        (ObjectOption("first", "--first", "First address.", "New first address.",
                      api_param("ip-address-first")),
         ObjectOption("last", "--last", "Last address.", "New last address.",
                      api_param("ip-address-last"))),
        "Add an address range to the session.", "List the address ranges, sorted by name.",
    ),
    ObjectKind(
        "group", "group", "a", "Groups of hosts, networks, ranges and groups.", ("group",),
        "groups",
        (ObjectOption("member", "--member",
                      "A member's name or uid (repeat; replaces all members).",
                      "A member's name or uid (repeat; replaces all members).",
                      api_param("members"), list[str], required_on_add=False, add_default=[]),
         # After --member: with both given, the members named win (see _option_params).
         ObjectOption("clear_members", "--clear-members", None, "Remove every member.",
                      lambda _: {"members": []}, bool)),
        "Add a group to the session.", "List the groups, sorted by name.",
    ),
    ObjectKind(
        "service", "service", "a", "TCP and UDP services: a port or port range.",
        ("service-tcp", "service-udp"), "services",
        (ObjectOption("port", "--port", "A port, or a range like 8080-8090.",
                      "New port or range.", api_param("port")),),
        "Add a TCP or UDP service to the session.",
        "List TCP and UDP services (or one protocol), sorted by name.",
    ),
)  # fmt: skip

ProtocolOption = Annotated[
    str | None,
    typer.Option("--protocol", help="tcp or udp (default: whichever holds the name)."),
]
AddProtocolOption = Annotated[str, typer.Option("--protocol", help="tcp or udp.")]


def register(app: typer.Typer) -> None:
    """Add a command group per object kind to `app`."""
    for kind in OBJECT_KINDS:
        sub_app = group(kind.group_help)
        for verb, build in (
            ("add", _add_command),
            ("set", _set_command),
            ("delete", _delete_command),
            ("show", _show_command),
            ("list", _list_command),
        ):
            add_command(sub_app, verb, build(kind))
        app.add_typer(sub_app, name=kind.command)


# ---------------------------------------------------------------- building commands


def _name_argument(help_text: str) -> inspect.Parameter:
    annotation = Annotated[str, typer.Argument(help=help_text)]
    return inspect.Parameter(name="name", kind=inspect.Parameter.KEYWORD_ONLY,
                             annotation=annotation)  # fmt: skip


def _ref_argument(kind: ObjectKind) -> inspect.Parameter:
    return _name_argument(f"Name or uid of the {kind.noun}.")


def _kind_options(kind: ObjectKind, verb: str) -> list[inspect.Parameter]:
    """The kind's own options of `add` or `set`, in table order."""
    parameters = []
    for option in kind.options:
        help_text = option.add_help if verb == "add" else option.set_help
        if help_text is None:
            continue
        if option.annotation is bool:
            parameters.append(keyword(option.name, _typed(bool, option, help_text), False))
        elif verb == "add" and option.required_on_add:
            parameters.append(keyword(option.name, _typed(option.annotation, option, help_text),
                                      inspect.Parameter.empty))  # fmt: skip
        else:
            annotation = _typed(option.annotation | None, option, help_text)
            parameters.append(keyword(option.name, annotation, None))
    return parameters


def _typed(annotation: Any, option: ObjectOption, help_text: str) -> Any:
    return Annotated[annotation, typer.Option(option.flag, help=help_text)]


def _object_options(verb: str) -> list[inspect.Parameter]:
    """What every object's `add` (and `set`, with --new-name) takes after its own options."""
    common = [keyword("new_name", NewNameOption)] if verb == "set" else []
    return [
        *common,
        keyword("comments", CommentsOption),
        keyword("color", ColorOption),
        keyword("tag", TagsOption),
        keyword("publish", PublishOption, False),
        keyword("login_file", LoginFileOption),
    ]


def _add_command(kind: ObjectKind) -> Callable[..., None]:
    parameters = [_name_argument(f"Name of the new {kind.noun}."), *_kind_options(kind, "add")]
    if kind.has_protocol:
        parameters.append(keyword("protocol", AddProtocolOption, "tcp"))

    def add(name: str, publish: bool, login_file: Path | None, **values: Any) -> None:
        # A bad --protocol is a usage mistake, found before logging in.
        obj_type = _service_type(values.pop("protocol")) if kind.has_protocol else None
        params = {"name": name, **_option_params(kind, "add", values)}

        async def work(client: Client) -> None:
            await _write(client, f"add-{obj_type or kind.api_types[0]}", params, publish)

        with_login(login_file, work)

    return command_from(f"{kind.command}_add", kind.add_help,
                    [*parameters, *_object_options("add")], add)  # fmt: skip


def _set_command(kind: ObjectKind) -> Callable[..., None]:
    parameters = [_ref_argument(kind), *_kind_options(kind, "set")]
    if kind.has_protocol:
        parameters.append(keyword("protocol", ProtocolOption))

    def change(name: str, publish: bool, login_file: Path | None, **values: Any) -> None:
        protocol = values.pop("protocol", None)
        params = {ref_key(name): name, **_option_params(kind, "set", values)}

        async def work(client: Client) -> None:
            obj_type, ref = await _resolve(client, kind, name, protocol)
            params.pop("name", None)
            await _write(client, f"set-{obj_type}", {**params, **ref}, publish)

        with_login(login_file, work)

    doc = f"Change {kind.article} {kind.noun} in the session."
    return command_from(f"{kind.command}_set", doc, [*parameters, *_object_options("set")], change)


def _delete_command(kind: ObjectKind) -> Callable[..., None]:
    parameters = [_ref_argument(kind)]
    if kind.has_protocol:
        parameters.append(keyword("protocol", ProtocolOption))
    parameters += [keyword("publish", PublishOption, False), keyword("login_file", LoginFileOption)]

    def delete(name: str, publish: bool, login_file: Path | None, protocol: str | None = None
               ) -> None:  # fmt: skip
        async def work(client: Client) -> None:
            obj_type, ref = await _resolve(client, kind, name, protocol)
            await _write(client, f"delete-{obj_type}", ref, publish)

        with_login(login_file, work)

    doc = f"Delete {kind.article} {kind.noun} in the session (refused while something uses it)."
    return command_from(f"{kind.command}_delete", doc, parameters, delete)


def _read_options() -> list[inspect.Parameter]:
    return [
        keyword("domain", DomainReadOption),
        keyword("as_json", JsonOption, False),
        keyword("login_file", LoginFileOption),
    ]


def _show_command(kind: ObjectKind) -> Callable[..., None]:
    parameters = [_ref_argument(kind)]
    if kind.has_protocol:
        parameters.append(keyword("protocol", ProtocolOption))

    def show(name: str, domain: str | None, as_json: bool, login_file: Path | None,
             protocol: str | None = None) -> None:  # fmt: skip
        async def work(client: Client) -> None:
            extra = domain_param(domain)
            obj_type = await _object_type(client, kind, name, protocol, **extra)
            reply = await client.call(f"show-{obj_type}", **{ref_key(name): name}, **extra)
            echo_json(reply) if as_json else echo_record(reply)

        with_login(login_file, work)

    doc = f"Show one {kind.noun} as this session sees it."
    return command_from(f"{kind.command}_show", doc, [*parameters, *_read_options()], show)


def _list_command(kind: ObjectKind) -> Callable[..., None]:
    parameters = [keyword("protocol", ProtocolOption)] if kind.has_protocol else []
    parameters += [keyword("name_filter", FilterOption), keyword("limit", LimitOption)]

    def listing(name_filter: str | None, limit: int | None, domain: str | None, as_json: bool,
                login_file: Path | None, protocol: str | None = None) -> None:  # fmt: skip
        if kind.has_protocol:
            protocols = [protocol] if protocol else ["tcp", "udp"]
            commands = [f"show-services-{_service_type(p).removeprefix('service-')}"
                        for p in protocols]  # fmt: skip
        else:
            commands = [f"show-{kind.plural}"]
        _list_objects(login_file, commands, as_json, name_filter, limit, domain)

    return command_from(f"{kind.command}_list", kind.list_help,
                    [*parameters, *_read_options()], listing)  # fmt: skip


# ---------------------------------------------------------------- running them


def _option_params(kind: ObjectKind, verb: str, values: dict[str, Any]) -> dict[str, Any]:
    """API parameters of the options given, then of the ones every object has."""
    params: dict[str, Any] = {}
    for option in kind.options:
        value = values.get(option.name)
        if value is None or value is False:
            value = option.add_default if verb == "add" else None
        if value is not None and value is not False:
            for key, sent in option.to_params(value).items():
                params.setdefault(key, sent)  # an earlier option wins (--member over --clear)
    for key, field in (("new-name", "new_name"), ("comments", "comments"),
                       ("color", "color"), ("tags", "tag")):  # fmt: skip
        if values.get(field) is not None:
            params[key] = values[field]
    return params


async def _write(client: Client, command: str, params: dict[str, Any], publish: bool) -> None:
    reply = await client.call(command, **params)
    verb, _, what = command.partition("-")
    done = {"add": "added", "set": "changed", "delete": "deleted"}[verb]
    name = reply.get("name", params.get("name") or params.get("uid", ""))
    suffix = f" ({reply['uid']})" if "uid" in reply else ""
    say(f"{done} {what} {name}{suffix}")
    if publish:
        await publish_now(client)


def _list_objects(
    login_file: Path | None,
    commands: list[str],
    as_json: bool,
    name_filter: str | None,
    limit: int | None,
    domain: str | None,
) -> None:
    async def work(client: Client) -> None:
        params: dict[str, Any] = domain_param(domain)
        if name_filter:
            params["filter"] = name_filter
        replies = [await all_pages(client, c, "objects", limit, **params) for c in commands]
        objects = [o for reply in replies for o in reply["objects"]]
        if as_json:
            echo_json(
                replies[0] if len(replies) == 1 else {"objects": objects, "total": len(objects)}
            )
        else:
            print_objects(objects)

    with_login(login_file, work)


def print_objects(objects: list[dict[str, Any]]) -> None:
    echo_table(
        ["Name", "Type", "Value", "Comments", "UID"],
        [
            [o.get("name"), o.get("type"), summary_of(o), o.get("comments"), o.get("uid")]
            for o in objects
        ],
    )


def _service_type(protocol: str) -> str:
    if protocol.lower() not in ("tcp", "udp"):
        raise typer.BadParameter("must be tcp or udp", param_hint="--protocol")
    return f"service-{protocol.lower()}"


async def _resolve(
    client: Client, kind: ObjectKind, name: str, protocol: str | None
) -> tuple[str, dict[str, Any]]:
    """The API type and the reference (`uid` when the name is the kind's only one) of the
    object a `set` or `delete` names. Concurrent adds on two servers can leave two objects
    with one name: such a name is refused, listing their uids, rather than one of them
    changed at the server's choice."""
    if ref_key(name) == "uid":
        return await _object_type(client, kind, name, protocol), {"uid": name}
    types = [_service_type(protocol)] if protocol else list(kind.api_types)
    matches: list[dict[str, Any]] = []
    for obj_type in types:
        command = f"show-services-{obj_type.removeprefix('service-')}" if kind.has_protocol else (
            f"show-{kind.plural}")  # fmt: skip
        listed = await all_pages(client, command, "objects", None, filter=name)
        matches += [o for o in listed["objects"] if o.get("name") == name]
    if len(matches) > 1:
        uids = ", ".join(f"{o['uid']} ({o.get('type')}, {summary_of(o) or 'no value'})"
                         for o in matches)  # fmt: skip
        raise CliFailure(
            "err_ambiguous_name",
            f"{len(matches)} {kind.plural} are named '{name}': {uids}. Give the uid of the one "
            "you mean (`crdtmds verify` lists duplicate names; rename one with --new-name)",
        )
    if matches:
        return matches[0]["type"], {"uid": matches[0]["uid"]}
    return await _object_type(client, kind, name, protocol), {"name": name}


async def _object_type(
    client: Client, kind: ObjectKind, name: str, protocol: str | None, **extra: Any
) -> str:
    """The API type of `name`: the kind's only one, from --protocol, or whichever holds it."""
    if not kind.has_protocol:
        return kind.api_types[0]
    if protocol is not None:
        return _service_type(protocol)
    for obj_type in kind.api_types:
        try:
            await client.call(f"show-{obj_type}", **{ref_key(name): name}, **extra)
        except ApiError as exc:
            if exc.code != "generic_err_object_not_found":
                raise
            continue
        return obj_type
    raise CliFailure("generic_err_object_not_found", f"no TCP or UDP service '{name}'")
