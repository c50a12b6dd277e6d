"""Server commands: `init`, `join`, `start` and `status`.

`init` creates a cluster (its Primary, cluster document, secret and first superuser),
`join` makes a Secondary from any member, `start` runs a server until SIGINT or SIGTERM,
and `status` asks every server of a cluster for its own view and says whether the cluster
has converged. Every command exits non-zero with the error code on failure.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from crdtmds.bootstrap import init_cluster, join_cluster
from crdtmds.config import Limits
from crdtmds.core import names
from crdtmds.errors import CrdtmdsError
from crdtmds.net.urls import (
    advertised_url_for,
    advertised_url_problem,
    peer_url_problem,
    points_at_listen_address,
)
from crdtmds.server import Server
from crdtmds.status_query import STATUS_TIMEOUT, collect_status
from crdtmds_cli.limit_options import limit_parameters, limits_from
from crdtmds_cli.login_file import PASSWORD_VARIABLE, StoredLogin, login_file_path
from crdtmds_cli.options import LoginFileOption, add_command, command_from, keyword
from crdtmds_cli.output import escape_strings, say

LOG_LEVELS = ("debug", "info", "warning", "error")
EXIT_NOT_CONVERGED = 4
"""`crdtmds status`: the report was made, and the cluster has not converged (a server
unreachable, or different heads somewhere)."""

DataOption = Annotated[Path, typer.Option("--data", help="The server's data directory.")]
NameOption = Annotated[str, typer.Option("--name", help="This server's name in the cluster.")]
ListenOption = Annotated[
    str, typer.Option("--listen", help="HOST:PORT to listen on; port 0 picks a free port.")
]
RegionOption = Annotated[str, typer.Option("--region", help="A label for where it runs.")]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The URL other servers dial (default: from --listen)."),
]
CertOption = Annotated[
    Path | None, typer.Option("--tls-cert", help="PEM certificate: serve wss instead of ws.")
]
KeyOption = Annotated[Path | None, typer.Option("--tls-key", help="PEM key of --tls-cert.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
WebApiOption = Annotated[
    str | None,
    typer.Option(
        "--web-api",
        help="HOST:PORT where the HTTPS Check Point Web API is served (port 0: a free one); "
        "without it, none is.",
    ),
]
DEFAULT_LIMITS = Limits()
MinPasswordOption = Annotated[
    int,
    typer.Option("--min-password-length", min=1, help="Fewest characters a new password may have."),
]


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    add_command(app, "init", init_command)
    add_command(app, "join", join_command)
    add_command(app, "start", start_command())
    add_command(app, "status", status_command)


# ---------------------------------------------------------------- commands


def init_command(
    data: DataOption,
    name: NameOption,
    listen: ListenOption,
    region: RegionOption = "default",
    admin: Annotated[str, typer.Option("--admin", help="The first superuser's name.")] = "admin",
    password: Annotated[
        str | None, typer.Option("--password", help="Its password (asked when omitted).")
    ] = None,
    url: UrlOption = None,
    tls_cert: CertOption = None,
    tls_key: KeyOption = None,
    min_password_length: MinPasswordOption = DEFAULT_LIMITS.min_password_length,
    web_api: WebApiOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a cluster: its Primary server here, a cluster secret and a first superuser."""
    _check_names(name, region)
    host, port = _parse_listen(listen)
    web_api_address = _parse_listen(web_api, "--web-api") if web_api else None
    _check_tls(tls_cert, tls_key)
    _check_url(url)
    _warn_unroutable(host, url)
    if password is None:
        password = typer.prompt(f"Password for {admin}", hide_input=True, confirmation_prompt=True)
    config = _run(
        init_cluster(
            data,
            name=name,
            listen_host=host,
            listen_port=port,
            url=url or advertised_url_for(host, port, tls=tls_cert is not None),
            region=region,
            admin=admin,
            password=password,
            min_password_length=min_password_length,
            tls_cert=_path_text(tls_cert),
            tls_key=_path_text(tls_key),
            web_api=web_api_address,
        )
    )
    result = {
        "name": config.name,
        "cluster-id": config.cluster_id,
        "secret": config.secret,
        "url": config.url or _pending_url(host, tls_cert is not None),
        "data": str(data),
    }
    if json_output:
        typer.echo(json.dumps(result))
        return
    say(f"created cluster {config.cluster_id} with primary server '{config.name}'")
    say(f"url: {result['url']}")
    say(f"secret (needed by `crdtmds join`; keep it private): {config.secret}")


def join_command(
    data: DataOption,
    name: NameOption,
    listen: ListenOption,
    peer: Annotated[str, typer.Option("--peer", help="URL of any server of the cluster.")],
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            envvar="CRDTMDS_SECRET",
            help="The cluster secret from init (or $CRDTMDS_SECRET, kept out of the process list).",
        ),
    ],
    region: RegionOption = "default",
    url: UrlOption = None,
    tls_cert: CertOption = None,
    tls_key: KeyOption = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 60.0,
    web_api: WebApiOption = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace the server listed under --name (one that lost its data): it "
            "rejoins with a new identity and fetches everything; the old one is refused.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Make a Secondary: fetch the cluster document and every domain from --peer."""
    _check_names(name, region)
    host, port = _parse_listen(listen)
    web_api_address = _parse_listen(web_api, "--web-api") if web_api else None
    _check_tls(tls_cert, tls_key)
    _check_url(url)
    _check_peer(peer, host, port)
    config = _run(
        join_cluster(
            data,
            name=name,
            listen_host=host,
            listen_port=port,
            region=region,
            peer=peer,
            secret=secret,
            url=url or "",
            tls_cert=_path_text(tls_cert),
            tls_key=_path_text(tls_key),
            timeout=timeout,
            web_api=web_api_address,
            replace=replace,
        )
    )
    result = {
        "name": config.name,
        "cluster-id": config.cluster_id,
        "server-id": config.server_id,
        "url": config.url or _pending_url(host, tls_cert is not None),
        "data": str(data),
    }
    if json_output:
        typer.echo(json.dumps(result))
    else:
        how = "replaced" if replace else "joined"
        say(f"{how} server '{config.name}' in cluster {config.cluster_id} (secondary)")


START_HELP = "Run the server until SIGINT or SIGTERM. Prints `listening on URL` once ready."
LogLevelOption = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
NoMeshOption = Annotated[
    bool,
    typer.Option(
        "--no-mesh",
        help="Dial only the configured and --peer URLs, not every server of the cluster.",
    ),
]
PeersOption = Annotated[
    list[str] | None, typer.Option("--peer", help="Another URL to dial (repeatable).")
]
DialUrlOption = Annotated[
    list[str] | None,
    typer.Option(
        "--dial-url",
        metavar="NAME=URL",
        help="Dial the server NAME at URL instead of the URL it advertises (repeatable): "
        "a tunnel, a proxy, an address of its own region. The mesh stays a full mesh.",
    ),
]
CompactThresholdOption = Annotated[
    int | None,
    typer.Option(
        "--compact-threshold",
        min=1,
        help="Change rows a document may have before they are compacted into a snapshot "
        "(default: the configured value, 1000); past the first compaction, the rows may "
        "grow to as many as the snapshots took in.",
    ),
]


StartWebApiOption = Annotated[
    str | None,
    typer.Option(
        "--web-api",
        help="HOST:PORT of the HTTPS Web API, replacing the stored one (kept for later "
        "starts; port 0: a free one, then kept).",
    ),
]


StartListenOption = Annotated[
    str | None,
    typer.Option(
        "--listen",
        help="HOST:PORT to listen on from now on (kept for later starts); without --url "
        "the advertised URL is derived from it.",
    ),
]
StartUrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The URL other servers dial from now on (kept, and listed in the cluster "
        "document so that they dial it).",
    ),
]


def start_command() -> Callable[..., None]:
    """`start`, whose options are the fixed ones and one per `Limits` field."""
    parameters = [
        keyword("data", DataOption, inspect.Parameter.empty),
        keyword("log_level", LogLevelOption, "info"),
        keyword("no_mesh", NoMeshOption, False),
        keyword("peer", PeersOption),
        keyword("dial_url", DialUrlOption),
        keyword("web_api", StartWebApiOption),
        keyword("listen", StartListenOption),
        keyword("url", StartUrlOption),
        *limit_parameters(),
        keyword("compact_threshold", CompactThresholdOption),
    ]
    return command_from("start_command", START_HELP, parameters, _start)


def _start(
    data: Path,
    log_level: str,
    no_mesh: bool,
    peer: list[str] | None,
    dial_url: list[str] | None,
    web_api: str | None,
    listen: str | None,
    url: str | None,
    compact_threshold: int | None,
    **limit_values: Any,
) -> None:
    _check_start_options(log_level, peer or [])
    dial_urls = _parse_dial_urls(dial_url or [])
    web_api_address = _parse_listen(web_api, "--web-api") if web_api else None
    host, port = _parse_listen(listen) if listen else (None, None)
    _check_url(url)
    _configure_logging(log_level)
    limits = limits_from(limit_values)

    async def serve() -> None:
        server = await Server.open(data, limits=limits)
        if compact_threshold is not None:
            server.persister.compact_threshold = compact_threshold
        if listen is not None or url is not None:
            await server.relocate(host, port, url)
        if web_api_address is not None:
            server.config.web_api_host, server.config.web_api_port = web_api_address
            server.config.web_api_url = ""

        def ready(url: str) -> None:
            print(f"listening on {url}", flush=True)  # first: launchers wait for this line
            web = server.status.web_api
            if web is not None:
                print(f"web api on {web['url']} sha1 {web['fingerprint-sha1']}", flush=True)

        await server.serve_forever(
            on_ready=ready, mesh=not no_mesh, peers=peer or [], dial_urls=dial_urls
        )

    _run(serve())


def status_command(
    server: Annotated[
        str | None,
        typer.Option(
            "--server", help="URL of any server of the cluster (default: the logged-in one)."
        ),
    ] = None,
    json_output: JsonOption = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per server.")] = (
        STATUS_TIMEOUT
    ),
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="Extra CA certificate to trust for wss.")
    ] = None,
    login_file: LoginFileOption = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Log in as this administrator instead of the login file."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password", help=f"Its password (else ${PASSWORD_VARIABLE}, else asked)."
        ),
    ] = None,
) -> None:
    """Show every server, each one's heads per domain, and whether the cluster converged.

    Needs a login (the login file of `crdtmds login`, or --user): without one a server
    says only that it is up. Exits 0 when converged, 4 when not (a server unreachable or
    heads differing), 1 on errors."""
    stored = None if user else _stored_login(login_file)
    if server is None and stored is None:
        say("error: not logged in: run `crdtmds login`, or give --server and --user", err=True)
        raise typer.Exit(1)
    target = server or (stored.server if stored else "")
    if user:
        password = password or os.environ.get(PASSWORD_VARIABLE) or typer.prompt(
            f"Password for {user}", hide_input=True
        )
        auth: dict[str, Any] = {"credentials": (user, password)}
    else:
        auth = _status_auth(stored, target)
    report = _run(collect_status(target, timeout=timeout, tls_ca=_path_text(tls_ca), **auth))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    else:
        # Every value in the report came from a server.
        typer.echo(format_status(escape_strings(report)))
    if not report["converged"]:
        raise typer.Exit(EXIT_NOT_CONVERGED)


def _stored_login(option: Path | None) -> StoredLogin | None:
    path = login_file_path(option)
    if not path.exists():
        return None
    try:
        return StoredLogin.load(path)
    except Exception as exc:
        say(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(1) from None


def _status_auth(stored: StoredLogin | None, target: str) -> dict[str, Any]:
    """The login's sid on its own server; elsewhere its user with the remembered password
    (or $CRDTMDS_PASSWORD)."""
    if stored is None:
        return {}
    if target.rstrip("/") == stored.server.rstrip("/"):
        return {"sid": stored.sid}
    password = stored.password or os.environ.get(PASSWORD_VARIABLE)
    return {"credentials": (stored.user, password)} if password else {}


# ---------------------------------------------------------------- status


def format_status(report: dict[str, Any]) -> str:
    """The report as text: one line per server, then per domain each server's heads."""
    lines = ["servers:"]
    for server in report["servers"]:
        state = "reachable" if server["reachable"] else f"UNREACHABLE ({server.get('error')})"
        peers = ", ".join(server["peers"]) or "-"
        lines.append(
            f"  {server['name']:<16} {server.get('region') or '-':<10} "
            f"{server.get('role') or '-':<10} {state}  peers: {peers}  {server['url']}"
        )
        if server.get("domains_total") is not None:
            lines.append(
                f"  {'':<16} domains loaded {server.get('domains_loaded')}"
                f" of {server.get('domains_total')}"
            )
        web = server.get("web-api")
        if isinstance(web, dict):
            lines.append(
                f"  {'':<16} web api {web.get('url')}  sha1 {web.get('fingerprint-sha1')}"
                f"  sha256 {web.get('fingerprint-sha256')}"
            )
    sections = [("cluster document", report["cluster-document"])]
    sections += [(f"domain {name}", entry) for name, entry in report["domains"].items()]
    for title, entry in sections:
        mark = "converged" if entry["converged"] else "DIFFERENT"
        lines.append(f"{title}: {mark}")
        for name, heads in entry["heads"].items():
            shown = "missing" if heads is None else ",".join(h[:12] for h in heads) or "(empty)"
            lines.append(f"  {name:<16} {shown}")
    lines.append(f"converged: {'yes' if report['converged'] else 'no'}")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine; a crdtmds error becomes a message on stderr and exit code 1."""
    try:
        return asyncio.run(coroutine)
    except CrdtmdsError as exc:
        say(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        say(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _check_names(name: str, region: str) -> None:
    """Refuse a bad --name or --region before anything is written or sent to a peer."""
    try:
        names.check_name(name, "--name")
        names.check_label(region, "--region")
    except CrdtmdsError as exc:
        say(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _parse_listen(listen: str, option: str = "--listen") -> tuple[str, int]:
    host, colon, port_text = listen.rpartition(":")
    host = host.strip("[]")
    bad_host = "/" in host or any(c.isspace() for c in host)
    if "://" in listen or bad_host or not colon or not port_text.isdigit() or not (
        0 <= int(port_text) <= 65535
    ):
        hint = " (a URL goes in --url)" if "://" in listen else ""
        typer.echo(f"error: {option} must be HOST:PORT, not {listen!r}{hint}", err=True)
        raise typer.Exit(2)
    return host or "0.0.0.0", int(port_text)


def _check_url(url: str | None) -> None:
    """--url: what other servers dial, so ws:// or wss:// with a host and a port."""
    problem = advertised_url_problem(url) if url is not None else None
    if problem is not None:
        typer.echo(f"error: --url {url!r}: {problem}", err=True)
        raise typer.Exit(2)


def _warn_unroutable(host: str, url: str | None) -> None:
    """Listening on every address without --url advertises a URL made of this machine's
    host name, which other servers may not resolve."""
    if url is None and host in ("0.0.0.0", "::", ""):
        say(
            f"warning: --listen {host} without --url advertises a URL made from this "
            "machine's host name (ws://HOST-NAME:PORT); if other servers cannot resolve "
            "it, give --url ws://ADDRESS:PORT (or change it later: start --url)",
            err=True,
        )


def _check_peer(peer: str, host: str, port: int) -> None:
    """A join's --peer must be a dialable URL of another server, not our own address."""
    problem = peer_url_problem(peer)
    if problem is not None:
        typer.echo(f"error: --peer {peer!r}: {problem}", err=True)
        raise typer.Exit(2)
    if points_at_listen_address(peer, host, port):
        typer.echo(
            f"error: --peer {peer!r} is this server's own --listen address ({host}:{port}); "
            "--peer must be the URL of a server already in the cluster",
            err=True,
        )
        raise typer.Exit(2)


def _check_start_options(log_level: str, peers: list[str]) -> None:
    """Refuse what would otherwise be ignored (a log level) or redialed forever (a URL)."""
    if log_level.lower() not in LOG_LEVELS:
        typer.echo(
            f"error: --log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}",
            err=True,
        )
        raise typer.Exit(2)
    for url in peers:
        problem = peer_url_problem(url)
        if problem is not None:
            typer.echo(f"error: --peer {url!r}: {problem}", err=True)
            raise typer.Exit(2)


def _parse_dial_urls(options: list[str]) -> dict[str, str]:
    """`--dial-url NAME=URL` options as a mapping; exits on a malformed one."""
    dial_urls = {}
    for option in options:
        name, _, url = option.partition("=")
        problem = "expected NAME=URL" if not name.strip() else peer_url_problem(url)
        if problem is not None:
            typer.echo(f"error: --dial-url {option!r}: {problem}", err=True)
            raise typer.Exit(2)
        dial_urls[name.strip()] = url.strip()
    return dial_urls


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        typer.echo("error: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)


def _pending_url(host: str, tls: bool) -> str:
    return f"{'wss' if tls else 'ws'}://{host}:(port chosen at start)"


def _path_text(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Their debug records show request lines (credentials in /sync URL queries) and SQL
    # parameters (the server configuration with the cluster secret, stored changes).
    for noisy in ("websockets", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
