"""Administrator commands: log in once, then edit, inspect and publish a domain's policy.

`crdtmds login` stores the login in a session file (by default
`~/.config/crdtmds/session.json`, mode 0600; `--session-file` or `CRDTMDS_SESSION_FILE`
choose another). Every later command reconnects with it, so edits made by several
commands collect in one session until `crdtmds session publish` (or `--publish` on the
edit itself). The password is kept only with `--remember-password`; without it the
client cannot log in on another server by itself when its server is lost.

Output is a plain table, or the server's JSON reply with `--json`. Failures print
`Error <code>: <message>` on stderr and exit 1; usage mistakes exit 2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import sys
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import yaml

from crdtmds.client import ApiError, Client, SessionLeftBehind, run
from crdtmds_cli.output import escape_text, json_text, say

T = TypeVar("T")

SESSION_FILE_NAME = "session.json"
PAGE_SIZE = 500
SESSION_FILE_VERSION = 1
UID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)

SessionFileOption = Annotated[
    Path | None,
    typer.Option(
        "--session-file",
        envvar="CRDTMDS_SESSION_FILE",
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
ProtocolOption = Annotated[
    str | None,
    typer.Option("--protocol", help="tcp or udp (default: whichever holds the name)."),
]


class CliFailure(Exception):
    """A failure to report as `Error <code>: <message>`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- the session file


@dataclass(slots=True)
class StoredLogin:
    """What the session file holds between commands."""

    urls: list[str]
    user: str
    sid: str
    server: str
    domain: str | None = None
    session_uid: str | None = None
    unpublished: bool = False
    password: str | None = None
    timeout: float = 10.0
    device_token: str | None = None
    version: int = SESSION_FILE_VERSION
    left_behind: list[list[str | None]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> StoredLogin:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CliFailure("err_not_logged_in", "not logged in: run `crdtmds login`") from None
        except (OSError, ValueError) as exc:
            raise CliFailure("err_session_file", f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != SESSION_FILE_VERSION:
            raise CliFailure("err_session_file", f"{path} is not a crdtmds session file")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise CliFailure("err_session_file", f"{path} is incomplete: {exc}") from None

    def save(self, path: Path) -> None:
        """Write the file readable by its owner only (it holds a live sid)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {k: v for k, v in asdict(self).items() if v is not None or k != "password"}
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            json.dump(data, stream, indent=2)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)

    def client(self) -> Client:
        return Client.resume(
            self.urls,
            sid=self.sid,
            user=self.user,
            server=self.server,
            password=self.password,
            domain=self.domain,
            session_uid=self.session_uid,
            unpublished=self.unpublished,
            timeout=self.timeout,
            device_token=self.device_token,
        )

    def follow(self, client: Client) -> None:
        """Take over where the client ended (another server or login after a failover)."""
        if client.sid is not None:
            self.sid = client.sid
            self.server = client.server
            self.session_uid = client.session_uid
        self.unpublished = client.unpublished
        self.device_token = client.device_token
        self.left_behind.extend([lost.server, lost.session] for lost in client.left_behind)


def session_path(option: Path | None) -> Path:
    if option is not None:
        return option
    return Path(typer.get_app_dir("crdtmds")) / SESSION_FILE_NAME


# ---------------------------------------------------------------- running and printing


class _EchoWarnings(logging.Handler):
    """Client log records as `warning: ...` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        say(f"warning: {record.getMessage()}", err=True)


def show_client_warnings() -> None:
    """Print the client's warnings (failover, drafts left behind) for the user to see."""
    logger = logging.getLogger("crdtmds.client")
    if not any(isinstance(h, _EchoWarnings) for h in logger.handlers):
        logger.addHandler(_EchoWarnings(logging.WARNING))  # also stops the bare fallback output


def fail(code: str, message: str, exit_code: int = 1) -> NoReturn:
    say(f"Error {code}: {message}", err=True)
    raise typer.Exit(exit_code)


def with_login(session_file: Path | None, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run `work` with the stored login, and store where the login ended up."""
    path = session_path(session_file)
    try:
        stored = StoredLogin.load(path)
    except CliFailure as failure:
        fail(failure.code, failure.message)
    client = stored.client()
    show_client_warnings()
    try:
        return run(_run_and_close(client, work))
    except SessionLeftBehind as exc:
        fail(
            exc.code,
            f"{exc.message}. Redo the edits here, or log in again on "
            f"{exc.details.get('server')} with --continue-session later.",
        )
    except ApiError as exc:
        fail(exc.code, exc.message)
    except CliFailure as failure:
        fail(failure.code, failure.message)
    finally:
        stored.follow(client)
        stored.save(path)


async def _run_and_close(client: Client, work: Callable[[Client], Awaitable[T]]) -> T:
    try:
        return await work(client)
    finally:
        await client.close()


def echo_json(data: Any) -> None:
    typer.echo(json_text(data))


def echo_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A plain table: columns padded to their widest cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    if not cells:
        say("(none)")
        return
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *cells]:
        say("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return escape_text(str(value.get("name") or value.get("uid") or ""))
    return escape_text(str(value))


def echo_record(record: dict[str, Any]) -> None:
    keys = {key: escape_text(key) for key in record}
    width = max((len(k) for k in keys.values()), default=0)
    for key, value in record.items():
        say(f"{keys[key].ljust(width)}  {_cell(value)}")


async def all_pages(
    client: Client, command: str, key: str, limit: int | None, **params: Any
) -> dict[str, Any]:
    """Every item of a paged list (up to `limit`), merged into the last page's reply."""
    items: list[Any] = []
    while True:
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
        reply = await client.call(command, limit=size, offset=len(items), **params)
        items.extend(reply.get(key, []))
        done = reply.get("to", 0) >= reply.get("total", 0) or not reply.get(key)
        if done or (limit is not None and len(items) >= limit):
            break
    if key == "rulebase":
        dictionary: dict[str, Any] = {}
        for item in reply.get("objects-dictionary", []):
            dictionary[item["uid"]] = item
        reply["objects-dictionary"] = list(dictionary.values())
    return {**reply, key: items, "from": 1 if items else 0, "to": len(items)}


async def publish_now(client: Client, comments: str | None = None) -> None:
    params = {"comments": comments} if comments else {}
    reply = await client.call("publish", **params)
    revision = reply.get("revision")
    if revision is None:
        say("nothing to publish")
    else:
        say(f"published revision {revision['uid']} ({revision.get('changes', 0)} changes)")


def _object_fields(comments: str | None, color: str | None, tags: list[str] | None) -> dict:
    fields: dict[str, Any] = {}
    if comments is not None:
        fields["comments"] = comments
    if color is not None:
        fields["color"] = color
    if tags is not None:
        fields["tags"] = tags
    return fields


def _write_object(
    session_file: Path | None,
    command: str,
    params: dict[str, Any],
    publish: bool,
) -> None:
    async def work(client: Client) -> None:
        reply = await client.call(command, **params)
        verb = command.split("-", 1)[0]
        done = {"add": "added", "set": "changed", "delete": "deleted"}[verb]
        what = command.split("-", 1)[1]
        name = reply.get("name", params.get("name", ""))
        suffix = f" ({reply['uid']})" if "uid" in reply else ""
        say(f"{done} {what} {name}{suffix}")
        if publish:
            await publish_now(client)

    with_login(session_file, work)


def _summary_of(record: dict[str, Any]) -> str:
    """The type-specific part of an object, in one cell."""
    kind = record.get("type")
    if kind == "host":
        return " ".join(filter(None, [record.get("ipv4-address"), record.get("ipv6-address")]))
    if kind == "network":
        parts = [
            f"{record[f'subnet{v}']}/{record[f'mask-length{v}']}"
            for v in (4, 6)
            if f"subnet{v}" in record
        ]
        return " ".join(parts)
    if kind == "address-range":
        return " ".join(
            f"{record[f'ipv{v}-address-first']}-{record[f'ipv{v}-address-last']}"
            for v in (4, 6)
            if f"ipv{v}-address-first" in record
        )
    if kind == "group":
        return _cell(record.get("members", []))
    if kind in ("service-tcp", "service-udp"):
        return f"{kind.removeprefix('service-')}/{record.get('port', '')}"
    if kind == "access-rule":
        source, destination, service = (
            _cell(record.get(column, [])) for column in ("source", "destination", "service")
        )
        return f"{source} -> {destination} ({service}): {record.get('action', '')}"
    return ""


def _print_objects(objects: list[dict[str, Any]]) -> None:
    echo_table(
        ["Name", "Type", "Value", "Comments", "UID"],
        [
            [o.get("name"), o.get("type"), _summary_of(o), o.get("comments"), o.get("uid")]
            for o in objects
        ],
    )


def _show_object(
    session_file: Path | None, obj_type: str, name: str, as_json: bool, domain: str | None
) -> None:
    async def work(client: Client) -> None:
        params = {"name": name, **({"domain": domain} if domain else {})}
        reply = await client.call(f"show-{obj_type}", **params)
        echo_json(reply) if as_json else echo_record(reply)

    with_login(session_file, work)


def _list_objects(
    session_file: Path | None,
    commands: list[str],
    as_json: bool,
    name_filter: str | None,
    limit: int | None,
    domain: str | None,
) -> None:
    async def work(client: Client) -> None:
        params: dict[str, Any] = {}
        if name_filter:
            params["filter"] = name_filter
        if domain:
            params["domain"] = domain
        replies = [await all_pages(client, c, "objects", limit, **params) for c in commands]
        objects = [o for reply in replies for o in reply["objects"]]
        if as_json:
            echo_json(
                replies[0] if len(replies) == 1 else {"objects": objects, "total": len(objects)}
            )
        else:
            _print_objects(objects)

    with_login(session_file, work)


# ---------------------------------------------------------------- login and logout


def login_command(
    server: Annotated[
        list[str],
        typer.Option(
            "--server",
            help="Server URL, e.g. ws://10.0.0.1:8443 (repeat for "
            "failover, in order of preference).",
        ),
    ],
    user: Annotated[str, typer.Option("--user", help="Administrator name.")],
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="CRDTMDS_PASSWORD",
            show_default=False,
            help="Password (default: $CRDTMDS_PASSWORD, else asked).",
        ),
    ] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="Domain to work in (default: system-wide).")
    ] = None,
    session_name: Annotated[
        str | None, typer.Option("--session-name", help="Name shown for the session.")
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Log in read-only.")] = False,
    continue_session: Annotated[
        bool,
        typer.Option(
            "--continue-session", help="Take over your latest unpublished session on that server."
        ),
    ] = False,
    remember_password: Annotated[
        bool,
        typer.Option(
            "--remember-password",
            help="Keep the password in the session file, so that a lost server can "
            "be replaced by the next one without asking.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for a server.")
    ] = 10.0,
    session_file: SessionFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Log in on the first server that answers and keep the login for later commands."""
    if password is None:
        password = typer.prompt(f"Password for {user}", hide_input=True)
    try:
        client = Client(
            server,
            user=user,
            password=password,
            domain=domain,
            session_name=session_name,
            timeout=timeout,
            read_only=read_only,
            continue_last_session=continue_session,
            device_token=_device_token_of(session_path(session_file), user),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--server") from None

    async def work() -> dict[str, Any]:
        try:
            return await client.login()
        finally:
            client.logout_on_close = False
            await client.close()

    try:
        reply = run(work())
    except ApiError as exc:
        fail(exc.code, exc.message)
    stored = StoredLogin(
        urls=list(client.urls),
        user=user,
        sid=reply["sid"],
        server=client.server,
        domain=domain,
        session_uid=reply.get("uid"),
        unpublished=client.unpublished,
        password=password if remember_password else None,
        timeout=timeout,
        device_token=client.device_token,
    )
    path = session_path(session_file)
    stored.save(path)
    if as_json:
        echo_json({k: v for k, v in reply.items() if k != "sid"})
        return
    where = f"domain {domain}" if domain else "the system-wide view"
    mode = " (read-only)" if reply.get("read-only") else ""
    say(f"logged in to {where} on {client.server} as {user}{mode}")
    say(f"session {reply.get('uid')}; login kept in {path}")
    if client.unpublished:
        say("the session holds unpublished changes: `crdtmds session show`")


def _device_token_of(path: Path, user: str) -> str | None:
    """The device token kept by an earlier login of `user` in this session file: with it,
    failed logins of others (say, behind the same NAT) do not hold this login back."""
    try:
        stored = StoredLogin.load(path)
    except CliFailure:
        return None
    return stored.device_token if stored.user == user else None


def logout_command(session_file: SessionFileOption = None) -> None:
    """End the login and remove the session file (unpublished changes stay on the server)."""
    path = session_path(session_file)
    try:
        stored = StoredLogin.load(path)
    except CliFailure as failure:
        fail(failure.code, failure.message)
    client = stored.client()

    async def work() -> None:
        try:
            await client.call("logout")
        finally:
            await client.close()

    show_client_warnings()
    try:
        run(work())
    except ApiError as exc:
        say(f"warning: {exc.code}: {exc.message}", err=True)
    finally:
        path.unlink(missing_ok=True)
    say("logged out")


# ---------------------------------------------------------------- objects


host_app = typer.Typer(help="Hosts: one IPv4 and/or IPv6 address.", no_args_is_help=True)
network_app = typer.Typer(help="Networks: a subnet and its mask length.", no_args_is_help=True)
range_app = typer.Typer(help="Address ranges: a first and last address.", no_args_is_help=True)
group_app = typer.Typer(help="Groups of hosts, networks, ranges and groups.", no_args_is_help=True)
service_app = typer.Typer(help="TCP and UDP services: a port or port range.", no_args_is_help=True)


@host_app.command("add")
def host_add(
    name: Annotated[str, typer.Argument(help="Name of the new host.")],
    ip: Annotated[str, typer.Option("--ip", help="IPv4 or IPv6 address.")],
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Add a host to the session."""
    params = {"name": name, "ip-address": ip, **_object_fields(comments, color, tag)}
    _write_object(session_file, "add-host", params, publish)


@host_app.command("set")
def host_set(
    name: Annotated[str, typer.Argument(help="Name or uid of the host.")],
    ip: Annotated[str | None, typer.Option("--ip", help="New IPv4 or IPv6 address.")] = None,
    new_name: NewNameOption = None,
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Change a host in the session."""
    params: dict[str, Any] = {_ref_key(name): name, **_object_fields(comments, color, tag)}
    if ip is not None:
        params["ip-address"] = ip
    if new_name is not None:
        params["new-name"] = new_name
    _write_object(session_file, "set-host", params, publish)


@network_app.command("add")
def network_add(
    name: Annotated[str, typer.Argument(help="Name of the new network.")],
    subnet: Annotated[str, typer.Option("--subnet", help="CIDR, e.g. 10.1.0.0/16.")],
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Add a network to the session."""
    params = {"name": name, **_cidr(subnet), **_object_fields(comments, color, tag)}
    _write_object(session_file, "add-network", params, publish)


@network_app.command("set")
def network_set(
    name: Annotated[str, typer.Argument(help="Name or uid of the network.")],
    subnet: Annotated[str | None, typer.Option("--subnet", help="New CIDR.")] = None,
    new_name: NewNameOption = None,
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Change a network in the session."""
    params: dict[str, Any] = {_ref_key(name): name, **_object_fields(comments, color, tag)}
    if subnet is not None:
        params.update(_cidr(subnet))
    if new_name is not None:
        params["new-name"] = new_name
    _write_object(session_file, "set-network", params, publish)


@range_app.command("add")
def range_add(
    name: Annotated[str, typer.Argument(help="Name of the new address range.")],
    first: Annotated[str, typer.Option("--first", help="First address.")],
    last: Annotated[str, typer.Option("--last", help="Last address.")],
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Add an address range to the session."""
    params = {
        "name": name,
        "ip-address-first": first,
        "ip-address-last": last,
        **_object_fields(comments, color, tag),
    }
    _write_object(session_file, "add-address-range", params, publish)


@range_app.command("set")
def range_set(
    name: Annotated[str, typer.Argument(help="Name or uid of the address range.")],
    first: Annotated[str | None, typer.Option("--first", help="New first address.")] = None,
    last: Annotated[str | None, typer.Option("--last", help="New last address.")] = None,
    new_name: NewNameOption = None,
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Change an address range in the session."""
    params: dict[str, Any] = {_ref_key(name): name, **_object_fields(comments, color, tag)}
    if first is not None:
        params["ip-address-first"] = first
    if last is not None:
        params["ip-address-last"] = last
    if new_name is not None:
        params["new-name"] = new_name
    _write_object(session_file, "set-address-range", params, publish)


MembersOption = Annotated[
    list[str] | None,
    typer.Option("--member", help="A member's name or uid (repeat; replaces all members)."),
]


@group_app.command("add")
def group_add(
    name: Annotated[str, typer.Argument(help="Name of the new group.")],
    member: MembersOption = None,
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Add a group to the session."""
    params = {"name": name, "members": member or [], **_object_fields(comments, color, tag)}
    _write_object(session_file, "add-group", params, publish)


@group_app.command("set")
def group_set(
    name: Annotated[str, typer.Argument(help="Name or uid of the group.")],
    member: MembersOption = None,
    clear_members: Annotated[
        bool, typer.Option("--clear-members", help="Remove every member.")
    ] = False,
    new_name: NewNameOption = None,
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Change a group in the session."""
    params: dict[str, Any] = {_ref_key(name): name, **_object_fields(comments, color, tag)}
    if member is not None or clear_members:
        params["members"] = member or []
    if new_name is not None:
        params["new-name"] = new_name
    _write_object(session_file, "set-group", params, publish)


@service_app.command("add")
def service_add(
    name: Annotated[str, typer.Argument(help="Name of the new service.")],
    port: Annotated[str, typer.Option("--port", help="A port, or a range like 8080-8090.")],
    protocol: Annotated[str, typer.Option("--protocol", help="tcp or udp.")] = "tcp",
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Add a TCP or UDP service to the session."""
    params = {"name": name, "port": port, **_object_fields(comments, color, tag)}
    _write_object(session_file, f"add-{_service_type(protocol)}", params, publish)


@service_app.command("set")
def service_set(
    name: Annotated[str, typer.Argument(help="Name or uid of the service.")],
    port: Annotated[str | None, typer.Option("--port", help="New port or range.")] = None,
    protocol: ProtocolOption = None,
    new_name: NewNameOption = None,
    comments: CommentsOption = None,
    color: ColorOption = None,
    tag: TagsOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Change a service in the session."""
    params: dict[str, Any] = {_ref_key(name): name, **_object_fields(comments, color, tag)}
    if port is not None:
        params["port"] = port
    if new_name is not None:
        params["new-name"] = new_name

    async def work(client: Client) -> None:
        obj_type = await _find_service_type(client, name, protocol)
        reply = await client.call(f"set-{obj_type}", **params)
        say(f"changed {obj_type} {reply['name']} ({reply['uid']})")
        if publish:
            await publish_now(client)

    with_login(session_file, work)


def _add_common_object_commands(app: typer.Typer, obj_type: str, noun: str) -> None:
    """`delete`, `show` and `list` of a type, which differ only in the command names."""
    NameArgument = Annotated[str, typer.Argument(help=f"Name or uid of the {noun}.")]

    def delete(
        name: NameArgument,
        publish: PublishOption = False,
        session_file: SessionFileOption = None,
    ) -> None:
        _write_object(session_file, f"delete-{obj_type}", {_ref_key(name): name}, publish)

    def show(
        name: NameArgument,
        domain: DomainReadOption = None,
        as_json: JsonOption = False,
        session_file: SessionFileOption = None,
    ) -> None:
        _show_object(session_file, obj_type, name, as_json, domain)

    def listing(
        name_filter: FilterOption = None,
        limit: LimitOption = None,
        domain: DomainReadOption = None,
        as_json: JsonOption = False,
        session_file: SessionFileOption = None,
    ) -> None:
        plural = {"address-range": "address-ranges"}.get(obj_type, f"{obj_type}s")
        _list_objects(session_file, [f"show-{plural}"], as_json, name_filter, limit, domain)

    delete.__doc__ = f"Delete a {noun} in the session (refused while something uses it)."
    show.__doc__ = f"Show one {noun} as this session sees it."
    listing.__doc__ = f"List the {noun}s, sorted by name."
    for command in (delete, show, listing):
        # Annotations are strings here (postponed evaluation); typer needs the objects,
        # including the argument whose help names this type.
        command.__annotations__ = typing.get_type_hints(
            command, localns={"NameArgument": NameArgument}, include_extras=True
        )
    app.command("delete")(delete)
    app.command("show")(show)
    app.command("list")(listing)


@service_app.command("delete")
def service_delete(
    name: Annotated[str, typer.Argument(help="Name or uid of the service.")],
    protocol: ProtocolOption = None,
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Delete a service in the session (refused while something uses it)."""

    async def work(client: Client) -> None:
        obj_type = await _find_service_type(client, name, protocol)
        await client.call(f"delete-{obj_type}", **{_ref_key(name): name})
        say(f"deleted {obj_type} {name}")
        if publish:
            await publish_now(client)

    with_login(session_file, work)


@service_app.command("show")
def service_show(
    name: Annotated[str, typer.Argument(help="Name or uid of the service.")],
    protocol: ProtocolOption = None,
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Show one service as this session sees it."""

    async def work(client: Client) -> None:
        extra = {"domain": domain} if domain else {}
        obj_type = await _find_service_type(client, name, protocol, **extra)
        reply = await client.call(f"show-{obj_type}", **{_ref_key(name): name}, **extra)
        echo_json(reply) if as_json else echo_record(reply)

    with_login(session_file, work)


@service_app.command("list")
def service_list(
    protocol: ProtocolOption = None,
    name_filter: FilterOption = None,
    limit: LimitOption = None,
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """List TCP and UDP services (or one protocol), sorted by name."""
    protocols = [protocol] if protocol else ["tcp", "udp"]
    commands = [f"show-services-{_service_type(p).removeprefix('service-')}" for p in protocols]
    _list_objects(session_file, commands, as_json, name_filter, limit, domain)


def _service_type(protocol: str) -> str:
    if protocol.lower() not in ("tcp", "udp"):
        raise typer.BadParameter("must be tcp or udp", param_hint="--protocol")
    return f"service-{protocol.lower()}"


async def _find_service_type(client: Client, name: str, protocol: str | None, **extra: Any) -> str:
    """The service type of `name`: from --protocol, or whichever protocol holds it."""
    if protocol is not None:
        return _service_type(protocol)
    for obj_type in ("service-tcp", "service-udp"):
        try:
            await client.call(f"show-{obj_type}", **{_ref_key(name): name}, **extra)
        except ApiError as exc:
            if exc.code != "generic_err_object_not_found":
                raise
            continue
        return obj_type
    raise CliFailure("generic_err_object_not_found", f"no TCP or UDP service '{name}'")


def _ref_key(ref: str) -> str:
    return "uid" if UID_RE.match(ref) else "name"


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


# ---------------------------------------------------------------- rules


rule_app = typer.Typer(
    help="Access rules of a layer (default layer: Network).", no_args_is_help=True
)
rulebase_app = typer.Typer(help="The ordered rules of an access layer.", no_args_is_help=True)

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


@rule_app.command("add")
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
    session_file: SessionFileOption = None,
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
    _write_rule(session_file, "add-access-rule", params, publish)


@rule_app.command("set")
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
    session_file: SessionFileOption = None,
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
    _write_rule(session_file, "set-access-rule", params, publish)


@rule_app.command("move")
def rule_move(
    rule: RuleArgument,
    to: Annotated[
        str, typer.Option("--to", help="top, bottom, a number, above:RULE or below:RULE.")
    ],
    layer: LayerOption = "Network",
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Move an access rule in the session."""
    params = {"layer": layer, **_rule_ref(rule), "new-position": _position(to, "--to")}
    _write_rule(session_file, "set-access-rule", params, publish)


@rule_app.command("delete")
def rule_delete(
    rule: RuleArgument,
    layer: LayerOption = "Network",
    publish: PublishOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Delete an access rule in the session."""
    _write_rule(session_file, "delete-access-rule", {"layer": layer, **_rule_ref(rule)}, publish)


@rule_app.command("show")
def rule_show(
    rule: RuleArgument,
    layer: LayerOption = "Network",
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Show one access rule as this session sees it."""

    async def work(client: Client) -> None:
        params = {"layer": layer, **_rule_ref(rule), **({"domain": domain} if domain else {})}
        reply = await client.call("show-access-rule", **params)
        echo_json(reply) if as_json else echo_record(reply)

    with_login(session_file, work)


@rulebase_app.command("show")
def rulebase_show(
    layer: LayerOption = "Network",
    limit: LimitOption = None,
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Show the rules of a layer in order, with object names."""

    async def work(client: Client) -> None:
        params = {"name": layer, **({"domain": domain} if domain else {})}
        reply = await all_pages(client, "show-access-rulebase", "rulebase", limit, **params)
        if as_json:
            echo_json(reply)
            return
        names = {o["uid"]: o.get("name") or o["uid"] for o in reply["objects-dictionary"]}

        def cell(uids: list[str]) -> str:
            return ", ".join(names.get(u, u) for u in uids)

        say(f"layer {reply['name']}: {reply['total']} rule(s)")
        echo_table(
            ["No.", "Name", "Source", "Destination", "Service", "Action", "Track", "Enabled"],
            [
                [
                    r["rule-number"],
                    r.get("name"),
                    cell(r.get("source", [])),
                    cell(r.get("destination", [])),
                    cell(r.get("service", [])),
                    r.get("action"),
                    r.get("track"),
                    r.get("enabled"),
                ]
                for r in reply["rulebase"]
            ],
        )

    with_login(session_file, work)


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
    return {_ref_key(ref): ref}


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
    session_file: Path | None, command: str, params: dict[str, Any], publish: bool
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

    with_login(session_file, work)


# ---------------------------------------------------------------- session


session_app = typer.Typer(help="The session: your unpublished changes.", no_args_is_help=True)


@session_app.command("show")
def session_show(as_json: JsonOption = False, session_file: SessionFileOption = None) -> None:
    """Show the session and every change it would publish."""

    async def work(client: Client) -> None:
        session = await client.call("show-session")
        changes = await client.call("show-changes") if session.get("domain") else {}
        if as_json:
            echo_json({"session": session, "changes": changes})
            return
        domain = (session.get("domain") or {}).get("name", "the system-wide view")
        say(
            f"session {session['uid']} of {session['user-name']} on {domain} "
            f"(server {client.server}): {changes.get('total', 0)} change(s)"
        )
        echo_table(["Change", "Type", "Name", "Details"], _change_rows(changes))

    with_login(session_file, work)


def _change_rows(changes: dict[str, Any]) -> list[list[Any]]:
    names = {o["uid"]: o.get("name") or o["uid"] for o in changes.get("objects-dictionary", [])}

    def named(value: Any) -> Any:
        # Member and rule-column uids, shown by name.
        if isinstance(value, list):
            return [names.get(v, v) if isinstance(v, str) else v for v in value]
        return value

    rows: list[list[Any]] = []
    for kind, key in (
        ("added", "added-objects"),
        ("modified", "modified-objects"),
        ("deleted", "deleted-objects"),
    ):
        for item in changes.get(key, []):
            details = item.get("fields", {})
            text = "; ".join(
                f"{f}: {_cell(named(v.get('old')))} -> {_cell(named(v.get('new')))}"
                for f, v in details.items()
            )
            shown = {k: named(v) for k, v in item.items()}
            rows.append([kind, item.get("type"), item.get("name"), text or _summary_of(shown)])
    return rows


@session_app.command("publish")
def session_publish(
    comments: Annotated[
        str | None, typer.Option("--comments", help="Comment stored with the revision.")
    ] = None,
    session_file: SessionFileOption = None,
) -> None:
    """Publish the session: its changes become visible and spread to every server."""

    async def work(client: Client) -> None:
        await publish_now(client, comments)

    with_login(session_file, work)


@session_app.command("discard")
def session_discard(session_file: SessionFileOption = None) -> None:
    """Drop every unpublished change of the session."""

    async def work(client: Client) -> None:
        reply = await client.call("discard")
        say(f"discarded {reply.get('number-of-discarded-changes', 0)} change(s)")

    with_login(session_file, work)


# ---------------------------------------------------------------- domains, revisions, checks


domain_app = typer.Typer(
    help="Domains: separate policies, each one Automerge document.", no_args_is_help=True
)
admin_app = typer.Typer(help="Administrators and their permissions.", no_args_is_help=True)


@domain_app.command("add")
def domain_add(
    name: Annotated[str, typer.Argument(help="Name of the new domain.")],
    session_file: SessionFileOption = None,
) -> None:
    """Create a domain (superusers only); it is on every server at once, no publish needed."""

    async def work(client: Client) -> None:
        reply = await client.call("add-domain", name=name)
        say(f"added domain {reply['name']} ({reply['uid']}) at {reply['url']}")

    with_login(session_file, work)


@domain_app.command("list")
def domain_list(as_json: JsonOption = False, session_file: SessionFileOption = None) -> None:
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

    with_login(session_file, work)


def revisions_command(
    domain: DomainReadOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest revisions to show.")] = 50,
    as_json: JsonOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """List published revisions of the domain, newest first."""

    async def work(client: Client) -> None:
        params = {"domain": domain} if domain else {}
        reply = await all_pages(client, "show-revisions", "objects", limit, **params)
        if as_json:
            echo_json(reply)
            return
        echo_table(
            ["Published at", "Admin", "Server", "Changes", "Comments", "UID"],
            [
                [
                    r.get("published-at"),
                    r.get("admin"),
                    r.get("server"),
                    r.get("changes"),
                    r.get("comments"),
                    r.get("uid"),
                ]
                for r in reply["objects"]
            ],
        )

    with_login(session_file, work)


def revert_command(
    revision: Annotated[str, typer.Argument(help="UID of the revision to go back to.")],
    comments: Annotated[
        str | None, typer.Option("--comments", help="Comment of the new revision.")
    ] = None,
    session_file: SessionFileOption = None,
) -> None:
    """Publish a new revision whose content is that of an earlier one."""

    async def work(client: Client) -> None:
        params = {"to-revision": revision, **({"comments": comments} if comments else {})}
        reply = await client.call("revert-to-revision", **params)
        say(f"reverted to {revision}: published revision {reply['revision']['uid']}")

    with_login(session_file, work)


def verify_command(
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Report what concurrent publishes left behind: duplicate names, dangling references."""

    async def work(client: Client) -> None:
        reply = await client.call("verify-policy", **({"domain": domain} if domain else {}))
        if as_json:
            echo_json(reply)
            return
        if not reply["problems"]:
            say(f"domain {reply['domain']['name']}: no problems")
            return
        echo_table(
            ["Problem", "Name / holder", "Details"],
            [
                [
                    p["type"],
                    p.get("name") or _cell(p.get("holder")),
                    _cell(p.get("uids") or p.get("missing")),
                ]
                for p in reply["problems"]
            ],
        )

    with_login(session_file, work)


def where_used_command(
    name: Annotated[str, typer.Argument(help="Name or uid of the object.")],
    domain: DomainReadOption = None,
    as_json: JsonOption = False,
    session_file: SessionFileOption = None,
) -> None:
    """Show the groups and rules that use an object."""

    async def work(client: Client) -> None:
        params = {_ref_key(name): name, **({"domain": domain} if domain else {})}
        reply = await client.call("where-used", **params)
        if as_json:
            echo_json(reply)
            return
        used = reply["used-directly"]
        rows = [["group", o.get("name"), ""] for o in used["objects"]]
        rows += [
            [
                "rule",
                f"{r['position']} {r['rule'].get('name') or ''}".strip(),
                ", ".join(r["rule-columns"]),
            ]
            for r in used["access-control-rules"]
        ]
        say(f"{reply['object']['name']} is used {used['total']} time(s)")
        echo_table(["Used by", "Name", "Columns"], rows)

    with_login(session_file, work)


@admin_app.command("add")
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
    session_file: SessionFileOption = None,
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

    with_login(session_file, work)


@admin_app.command("list")
def admin_list(as_json: JsonOption = False, session_file: SessionFileOption = None) -> None:
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

    with_login(session_file, work)


def _grant(text: str) -> tuple[str, str]:
    domain, equals, level = text.partition("=")
    if not equals or not domain or level not in ("read-only", "read-write"):
        raise typer.BadParameter("use DOMAIN=read-only or DOMAIN=read-write", param_hint="--domain")
    return domain, level


# ---------------------------------------------------------------- apply


def apply_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="YAML or JSON list of {command, params}.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish once everything applied.")
    ] = True,
    comments: Annotated[
        str | None, typer.Option("--comments", help="Comment of the published revision.")
    ] = None,
    discard_on_error: Annotated[
        bool,
        typer.Option(
            "--discard-on-error",
            help="On an error, discard what this file had applied (default: leave it "
            "unpublished in the session).",
        ),
    ] = False,
    session_file: SessionFileOption = None,
) -> None:
    """Run a file of API commands in one session and publish them together.

    Each entry is {command: add-host, params: {name: web, ipv4-address: 192.0.2.10}}.
    It stops at the first error, names the entry, and publishes nothing.
    """
    entries = _read_entries(file)

    async def work(client: Client) -> None:
        session = await client.call("show-session")
        if session.get("changes"):
            raise CliFailure(
                "err_session_not_empty",
                f"the session already holds {session['changes']} unpublished change(s): "
                "publish or discard them first (`crdtmds session show`)",
            )
        await _apply_entries(client, entries, discard_on_error)
        say(f"applied {len(entries)} command(s)")
        if publish:
            await publish_now(client, comments)

    with_login(session_file, work)


def _read_entries(file: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc}", param_hint="FILE") from None
    if not isinstance(data, list):
        raise typer.BadParameter(
            "the file must hold a list of {command, params}", param_hint="FILE"
        )
    for index, entry in enumerate(data, start=1):
        command = entry.get("command") if isinstance(entry, dict) else None
        params = entry.get("params", {}) if isinstance(entry, dict) else None
        if not isinstance(command, str) or not isinstance(params, dict | None):
            raise typer.BadParameter(
                f"entry {index} needs a 'command' string and a 'params' mapping", param_hint="FILE"
            )
    return data


async def _apply_entries(
    client: Client, entries: list[dict[str, Any]], discard_on_error: bool
) -> None:
    with typer.progressbar(entries, label="applying", file=sys.stderr) as bar:
        for index, entry in enumerate(bar, start=1):
            try:
                await client.call(entry["command"], **(entry.get("params") or {}))
            except ApiError as exc:
                outcome = await _after_failed_entry(client, discard_on_error, index)
                raise CliFailure(
                    exc.code, f"entry {index} ({entry['command']}): {exc.message}; {outcome}"
                ) from None


async def _after_failed_entry(client: Client, discard_on_error: bool, index: int) -> str:
    if index == 1 and not client.unpublished:
        return "nothing was applied"
    if not discard_on_error:
        return (
            f"entries 1-{index - 1} stay unpublished in the session: "
            "`crdtmds session show`, then publish or discard"
        )
    with contextlib.suppress(ApiError):
        reply = await client.call("discard")
        return f"discarded {reply.get('number-of-discarded-changes', 0)} change(s)"
    return "the discard failed too: check `crdtmds session show`"


# ---------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """Add the administrator commands to `app`."""
    app.command("login")(login_command)
    app.command("logout")(logout_command)
    _add_common_object_commands(host_app, "host", "host")
    _add_common_object_commands(network_app, "network", "network")
    _add_common_object_commands(range_app, "address-range", "address range")
    _add_common_object_commands(group_app, "group", "group")
    for name, sub_app in (
        ("host", host_app),
        ("network", network_app),
        ("range", range_app),
        ("group", group_app),
        ("service", service_app),
        ("rule", rule_app),
        ("rulebase", rulebase_app),
        ("session", session_app),
        ("domain", domain_app),
        ("admin", admin_app),
    ):
        app.add_typer(sub_app, name=name)
    app.command("revisions")(revisions_command)
    app.command("revert")(revert_command)
    app.command("verify")(verify_command)
    app.command("where-used")(where_used_command)
    app.command("apply")(apply_command)
