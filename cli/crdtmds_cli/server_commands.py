"""Server commands: `init`, `join`, `start` and `status`.

`init` creates a cluster (its Primary, cluster document, secret and first superuser),
`join` makes a Secondary from any member, `start` runs a server until SIGINT or SIGTERM,
and `status` asks every server of a cluster for its own view and says whether the cluster
has converged. Every command exits non-zero with the error code on failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from crdtmds.core import model
from crdtmds.errors import ClusterError, CrdtmdsError
from crdtmds.node import (
    Limits,
    Node,
    advertised_url_for,
    client_ssl_context,
    join_cluster,
    peer_url_problem,
)
from crdtmds_cli.output import escape_strings, say

STATUS_TIMEOUT = 5.0
LOG_LEVELS = ("debug", "info", "warning", "error")

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
DEFAULT_LIMITS = Limits()
MinPasswordOption = Annotated[
    int,
    typer.Option("--min-password-length", min=1, help="Fewest characters a new password may have."),
]


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("init")(init_command)
    app.command("join")(join_command)
    app.command("start")(start_command)
    app.command("status")(status_command)


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
    json_output: JsonOption = False,
) -> None:
    """Create a cluster: its Primary server here, a cluster secret and a first superuser."""
    _check_names(name, region)
    host, port = _parse_listen(listen)
    _check_tls(tls_cert, tls_key)
    if password is None:
        password = typer.prompt(f"Password for {admin}", hide_input=True, confirmation_prompt=True)
    config = _run(
        Node.initialise(
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
    json_output: JsonOption = False,
) -> None:
    """Make a Secondary: fetch the cluster document and every domain from --peer."""
    _check_names(name, region)
    host, port = _parse_listen(listen)
    _check_tls(tls_cert, tls_key)
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
        )
    )
    result = {
        "name": config.name,
        "cluster-id": config.cluster_id,
        "url": config.url or _pending_url(host, tls_cert is not None),
        "data": str(data),
    }
    if json_output:
        typer.echo(json.dumps(result))
    else:
        say(f"joined cluster {config.cluster_id} as secondary server '{config.name}'")


def start_command(
    data: DataOption,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
    no_mesh: Annotated[
        bool,
        typer.Option(
            "--no-mesh",
            help="Dial only the configured and --peer URLs, not every server of the cluster.",
        ),
    ] = False,
    peer: Annotated[
        list[str] | None, typer.Option("--peer", help="Another URL to dial (repeatable).")
    ] = None,
    max_message_size: Annotated[
        int,
        typer.Option("--max-message-size", min=1024, help="Bytes in one frame, /sync and /api."),
    ] = DEFAULT_LIMITS.max_message_size,
    max_sync_message_size: Annotated[
        int,
        typer.Option(
            "--max-sync-message-size",
            min=1024,
            help="Bytes in one sync frame this server sends; larger sync messages are split "
            "(stock automerge-repo clients accept 1 MiB).",
        ),
    ] = DEFAULT_LIMITS.max_sync_message_size,
    max_documents: Annotated[
        int,
        typer.Option(
            "--max-documents-per-connection", min=1, help="Documents one /sync peer may name."
        ),
    ] = DEFAULT_LIMITS.max_documents_per_connection,
    login_failures: Annotated[
        int,
        typer.Option(
            "--login-failures",
            min=1,
            help="Failed logins for one user name from one address before it must wait "
            "(four times as many per user name, and per address, over all).",
        ),
    ] = DEFAULT_LIMITS.login_failures,
    login_lockout: Annotated[
        float,
        typer.Option(
            "--login-lockout",
            min=0.0,
            help="Seconds of that first wait; each further failure doubles it (up to 300 s).",
        ),
    ] = DEFAULT_LIMITS.login_lockout,
    handshake_timeout: Annotated[
        float,
        typer.Option(
            "--handshake-timeout", min=0.1, help="Seconds a /sync peer has to be admitted."
        ),
    ] = DEFAULT_LIMITS.handshake_timeout,
    idle_timeout: Annotated[
        float,
        typer.Option("--idle-timeout", min=0.1, help="Seconds an /api connection may stay silent."),
    ] = DEFAULT_LIMITS.idle_timeout,
    min_password_length: MinPasswordOption = DEFAULT_LIMITS.min_password_length,
    relay_delay: Annotated[
        float,
        typer.Option(
            "--relay-delay",
            min=0.0,
            help="In a full mesh, seconds to wait before passing one server's changes on to "
            "the others while linked to every server (they most likely have them from their "
            "origin). Without the mesh, changes are relayed at once.",
        ),
    ] = DEFAULT_LIMITS.relay_delay,
    compact_threshold: Annotated[
        int | None,
        typer.Option(
            "--compact-threshold",
            min=1,
            help="Change rows a document may have before they are compacted into a snapshot "
            "(default: the configured value, 1000); past the first compaction, the rows may "
            "grow to as many as the snapshots took in.",
        ),
    ] = None,
) -> None:
    """Run the server until SIGINT or SIGTERM. Prints `listening on URL` once ready."""
    _check_start_options(log_level, peer or [])
    _configure_logging(log_level)
    limits = Limits(
        max_message_size=max_message_size,
        max_sync_message_size=max_sync_message_size,
        max_documents_per_connection=max_documents,
        login_failures=login_failures,
        login_lockout=login_lockout,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        min_password_length=min_password_length,
        relay_delay=relay_delay,
    )

    def ready(url: str) -> None:
        print(f"listening on {url}", flush=True)

    async def serve() -> None:
        node = await Node.open(data, limits=limits)
        if compact_threshold is not None:
            node.config.compact_threshold = compact_threshold
        await node.serve_forever(on_ready=ready, mesh=not no_mesh, peers=peer or [])

    _run(serve())


def status_command(
    server: Annotated[str, typer.Option("--server", help="URL of any server of the cluster.")],
    json_output: JsonOption = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per server.")] = (
        STATUS_TIMEOUT
    ),
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="Extra CA certificate to trust for wss.")
    ] = None,
) -> None:
    """Show every server, each one's heads per domain, and whether the cluster converged."""
    report = _run(collect_status(server, timeout=timeout, tls_ca=_path_text(tls_ca)))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    else:
        # Every value in the report came from a server, unauthenticated.
        typer.echo(format_status(escape_strings(report)))


# ---------------------------------------------------------------- status


async def collect_status(
    server: str, *, timeout: float = STATUS_TIMEOUT, tls_ca: str | None = None
) -> dict[str, Any]:
    """Ask `server` for the server list, then every server for its own status.

    Returns `servers` (name, url, region, role, reachable, peers), `domains` (per domain:
    document id, each server's heads, converged), `cluster-document` (likewise) and
    `converged`: every server reachable and identical heads everywhere.
    """
    first = await query_status(server, timeout=timeout, tls_ca=tls_ca)
    listed = {entry["name"]: entry for entry in first.get("servers", []) if entry.get("name")}
    listed.setdefault(first["name"], {"name": first["name"], "url": first.get("url", "")})
    names = sorted(listed)

    async def status_of(name: str) -> dict[str, Any] | str:
        if name == first["name"]:
            return first
        url = listed[name].get("url") or ""
        if not url:
            return "no URL registered yet"
        try:
            return await query_status(url, timeout=timeout, tls_ca=tls_ca)
        except CrdtmdsError as exc:
            return exc.message

    answers = dict(zip(names, await asyncio.gather(*(status_of(n) for n in names)), strict=True))
    return _status_report(listed, answers)


def _status_report(
    listed: dict[str, dict[str, Any]], answers: dict[str, dict[str, Any] | str]
) -> dict[str, Any]:
    servers = []
    reachable: dict[str, dict[str, Any]] = {}
    for name, answer in answers.items():
        entry = listed[name]
        row = {
            "name": name,
            "url": entry.get("url", ""),
            "region": entry.get("region"),
            "role": entry.get("role"),
            "reachable": isinstance(answer, dict),
            "peers": [],
        }
        if isinstance(answer, dict):
            reachable[name] = answer
            row.update(
                url=answer.get("url", row["url"]),
                region=answer.get("region"),
                role=answer.get("role"),
                peers=answer.get("peers", []),
            )
        else:
            row["error"] = answer
        servers.append(row)
    domain_names = sorted({d for status in reachable.values() for d in status.get("domains", {})})
    domains = {name: _heads_by_server(reachable, name) for name in domain_names}
    cluster_document = _heads_by_server(reachable, None)
    converged = (
        len(reachable) == len(answers)
        and cluster_document["converged"]
        and all(d["converged"] for d in domains.values())
    )
    return {
        "servers": servers,
        "domains": domains,
        "cluster-document": cluster_document,
        "converged": converged,
    }


def _heads_by_server(statuses: dict[str, dict[str, Any]], domain: str | None) -> dict[str, Any]:
    """One domain's (or, for None, the cluster document's) heads on every server."""
    heads: dict[str, list[str] | None] = {}
    document_id = None
    for name, status in statuses.items():
        entry = (
            status.get("cluster-document")
            if domain is None
            else status.get("domains", {}).get(domain)
        )
        heads[name] = entry.get("heads") if entry else None
        document_id = document_id or (entry or {}).get("document-id")
    distinct = {tuple(h) for h in heads.values() if h is not None}
    converged = None not in heads.values() and len(distinct) == 1 and () not in distinct
    return {"document-id": document_id, "heads": heads, "converged": converged}


async def query_status(
    server: str, *, timeout: float = STATUS_TIMEOUT, tls_ca: str | None = None
) -> dict[str, Any]:
    """One server's own status: the unauthenticated `show-status` command over /api."""
    request = json.dumps({"id": 1, "command": "show-status", "params": {}})
    try:
        async with asyncio.timeout(timeout):
            async with connect(
                _api_url(server),
                ssl=client_ssl_context(tls_ca) if server.startswith("wss:") else None,
                proxy=None,
                open_timeout=timeout,
            ) as ws:
                await ws.send(request)
                text = await ws.recv()
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
        raise ClusterError(f"cannot reach {server}: {exc or type(exc).__name__}") from exc
    return _reply_data(server, text)


def _reply_data(server: str, text: str | bytes) -> dict[str, Any]:
    try:
        reply = json.loads(text)
    except ValueError as exc:
        raise ClusterError(f"{server} sent a malformed reply: {exc}") from exc
    if not isinstance(reply, dict):
        raise ClusterError(f"{server} sent a malformed reply")
    error = reply.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise ClusterError(f"{server} refused show-status: {message}")
    for key in ("result", "data"):
        if isinstance(reply.get(key), dict):
            return reply[key]
    if "name" in reply:
        return reply
    raise ClusterError(f"{server} sent a reply without a status")


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
        model.check_name(name, "--name")
        model.check_label(region, "--region")
    except CrdtmdsError as exc:
        say(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _parse_listen(listen: str) -> tuple[str, int]:
    host, colon, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not colon or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        typer.echo(f"error: --listen must be HOST:PORT, not {listen!r}", err=True)
        raise typer.Exit(2)
    return host or "0.0.0.0", int(port_text)


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


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        typer.echo("error: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)


def _pending_url(host: str, tls: bool) -> str:
    return f"{'wss' if tls else 'ws'}://{host}:(port chosen at start)"


def _api_url(server: str) -> str:
    parts = urlsplit(server.strip())
    path = parts.path.rstrip("/")
    if path.endswith(("/sync", "/api")):
        path = path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, path + "/api", "", ""))


def _path_text(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Their debug records show request lines (credentials in /sync URL queries) and SQL
    # parameters (the node configuration with the cluster secret, stored changes).
    for noisy in ("websockets", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
