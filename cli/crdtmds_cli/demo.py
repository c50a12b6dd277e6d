"""`crdtmds demo`: a local cluster doing real, concurrent publishes, converging on every server."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from crdtmds.testing.localcluster import LocalCluster
from crdtmds_cli.options import add_command
from crdtmds_cli.rulebase_view import COLUMNS, table_rows

if TYPE_CHECKING:
    from crdtmds.client import Client

T = TypeVar("T")
CONVERGENCE_TIMEOUT = 30.0


def register(app: typer.Typer) -> None:
    """Add the `demo` command to `app`."""
    add_command(app, "demo", demo)


def demo(
    nodes: int = typer.Option(3, "--nodes", min=2, max=9, help="Servers in the local cluster."),
    domain: str = typer.Option("acme", "--domain", help="Name of the domain the demo edits."),
    keep: bool = typer.Option(False, "--keep", help="Keep the data directory afterwards."),
) -> None:
    """Run a local cluster on loopback and watch concurrent publishes converge.

    Starts the servers (one init, the others join) in a temporary data directory, logs in
    on every server, publishes concurrent sessions of objects and rules from each, shows
    the rulebase converging on all servers with per-step timings, and stops everything.
    """
    root = Path(tempfile.mkdtemp(prefix="crdtmds-demo-"))
    typer.echo(f"data directory: {root}")
    cluster = LocalCluster(root, nodes)
    try:
        _step(f"start {nodes} servers (1 init, {nodes - 1} join)", cluster.start)
        for server in cluster.servers:
            typer.echo(f"    {server.name}  {server.url}")
        asyncio.run(_scenario(cluster, domain))
    except KeyboardInterrupt:
        typer.echo("interrupted; stopping the servers", err=True)
        raise typer.Exit(130) from None
    finally:
        _step("stop every server", cluster.stop)
        if not keep:
            _remove_tree(root)
        else:
            typer.echo(f"kept {root}")


async def _scenario(cluster: LocalCluster, domain: str) -> None:
    from crdtmds.client import Client

    def login(url: str, **options: Any) -> Client:
        return Client([url], user=cluster.admin, password=cluster.password, **options)

    names = [server.name for server in cluster.servers]
    admins = [login(url) for url in cluster.urls]
    editors = [
        login(url, domain=domain, session_name=f"demo on {name}")
        for url, name in zip(cluster.urls, names, strict=True)
    ]
    try:
        await _astep("log in on every server", lambda: asyncio.gather(*(a.login() for a in admins)))
        await _astep(f"add domain {domain!r} on {names[0]}",
                     lambda: admins[0].call("add-domain", name=domain))  # fmt: skip
        await _astep("domain reaches every server", lambda: _wait_for_domain(admins, domain))
        await asyncio.gather(*(e.login() for e in editors))
        await _astep(
            f"{len(editors)} concurrent sessions edit objects and rules",
            lambda: asyncio.gather(*(_edit(e, i + 1) for i, e in enumerate(editors))),
        )
        published = await _astep(
            "publish all sessions at once",
            lambda: asyncio.gather(*(e.call("publish", comments="demo") for e in editors)),
        )
        typer.echo(f"    {len(published)} revisions published")
        rulebases = await _astep(
            "rulebase identical on every server", lambda: _wait_for_convergence(editors)
        )
        _print_rulebase(rulebases[0])
        problems = await editors[-1].call("verify-policy")
        typer.echo(f"verify-policy on {names[-1]}: {_describe(problems)}")
    finally:
        for client in [*admins, *editors]:
            await client.close()


async def _edit(client: Client, n: int) -> None:
    await client.call("add-host", **{"name": f"web{n}", "ipv4-address": f"192.0.2.{10 + n}"})
    await client.call("add-network", **{"name": f"lan{n}", "subnet4": f"10.{n}.0.0",
                                         "mask-length4": 16})  # fmt: skip
    await client.call("add-service-tcp", name=f"app{n}", port=str(8000 + n))
    await client.call("add-group", name=f"web-servers{n}", members=[f"web{n}"])
    await client.call(
        "add-access-rule",
        layer="Network",
        position="top",
        name=f"lan{n} to web{n}",
        source=[f"lan{n}"],
        destination=[f"web-servers{n}"],
        service=[f"app{n}"],
        action="Accept",
        track={"type": "Log"},
    )
    await client.call("add-access-rule", layer="Network", position="bottom",
                      name=f"cleanup {n}", action="Drop")  # fmt: skip


async def _wait_for_domain(admins: list[Client], domain: str) -> None:
    async def visible(admin: Client) -> bool:
        reply = await admin.call("show-domains")
        return any(d.get("name") == domain and d.get("available") for d in reply["objects"])

    await _until(lambda: _all(visible(admin) for admin in admins))


async def _wait_for_convergence(clients: list[Client]) -> list[dict[str, Any]]:
    latest: list[dict[str, Any]] = []

    async def identical() -> bool:
        nonlocal latest
        latest = list(await asyncio.gather(
            *(c.call("show-access-rulebase", name="Network", limit=500) for c in clients)
        ))  # fmt: skip
        keys = {tuple((r["uid"], r["rule-number"]) for r in rb["rulebase"]) for rb in latest}
        return len(keys) == 1 and latest[0]["total"] > 0

    await _until(identical)
    return latest


async def _all(checks: Any) -> bool:
    return all(await asyncio.gather(*checks))


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + CONVERGENCE_TIMEOUT
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"not converged within {CONVERGENCE_TIMEOUT:.0f} s")


def _step(title: str, action: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = action()
    typer.echo(f"[{(time.perf_counter() - started) * 1000:8.1f} ms] {title}")
    return result


async def _astep(title: str, action: Callable[[], Awaitable[T]]) -> T:
    started = time.perf_counter()
    result = await action()
    typer.echo(f"[{(time.perf_counter() - started) * 1000:8.1f} ms] {title}")
    return result


def _print_rulebase(rulebase: dict[str, Any]) -> None:
    shown = COLUMNS.index("Action") + 1  # the demo's rules have no track and are all enabled
    header = COLUMNS[:shown]
    rows = [[str(cell) for cell in row[:shown]] for row in table_rows(rulebase)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))


def _describe(reply: dict[str, Any]) -> str:
    problems = reply.get("problems", reply.get("errors", []))
    return "no problems" if not problems else f"{len(problems)} problem(s): {problems}"


def _remove_tree(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
