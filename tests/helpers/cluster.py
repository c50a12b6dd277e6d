"""Real crdtmds server processes on loopback, for multi-process tests.

`Cluster` creates servers with the `crdtmds` command line (`init`, `join`, `start`) in a
temporary directory, each listening on an OS-chosen port of 127.0.0.1, and stops them all
(SIGTERM, then SIGKILL) in `stop_all`; use it as a context manager or from a fixture.
`ApiClient` speaks the admin API over `/api`; `publish_hosts`, `wait_converged` and
`host_names` are the usual steps of a convergence test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from crdtmds.status_query import collect_status
from crdtmds.testing.localcluster import LocalServer, cli_command

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0
ADMIN = "admin"
PASSWORD = "admin-password"
ADMIN_LOGIN = ("--user", ADMIN, "--password", PASSWORD)
"""`crdtmds status` options that log in as the superuser of `Cluster.init`."""


def cli_env() -> dict[str, str]:
    """The environment for a CLI process: the checkout first on the import path."""
    paths = [str(REPO_ROOT), str(REPO_ROOT / "cli")]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        paths.append(existing)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def run_cli(
    *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run one `crdtmds` command to completion; with `check`, fail on a non-zero exit."""
    result = subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"crdtmds {' '.join(args[:1])} exited {result.returncode}:\n{result.stderr}"
        )
    return result


NodeProcess = LocalServer
"""One `crdtmds start` process (the package's own launcher, shared with the demo)."""


class Cluster:
    """Servers under `root`, created by `init` and `join`; `stop_all` stops every one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret = ""
        self.nodes: dict[str, NodeProcess] = {}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def __getitem__(self, name: str) -> NodeProcess:
        return self.nodes[name]

    def init(
        self, name: str, *, start_args: list[str] | None = None, start: bool = True
    ) -> NodeProcess:
        """The Primary (creates the cluster, superuser ADMIN/PASSWORD)."""
        node = self.add_node(name, start_args)
        output = run_cli(
            "init", "--data", str(node.data_dir), "--name", name, "--listen", "127.0.0.1:0",
            "--admin", ADMIN, "--password", PASSWORD, "--json",
        ).stdout  # fmt: skip
        self.secret = json.loads(output)["secret"]
        if start:
            node.start()
        return node

    def join(
        self,
        name: str,
        *,
        peer: str,
        start_args: list[str] | None = None,
        start: bool = True,
        region: str = "default",
    ) -> NodeProcess:
        """A Secondary fetched from `peer` (a URL)."""
        node = self.add_node(name, start_args)
        run_cli(
            "join", "--data", str(node.data_dir), "--name", name, "--listen", "127.0.0.1:0",
            "--peer", peer, "--secret", self.secret, "--region", region, "--timeout", "30",
        )  # fmt: skip
        if start:
            node.start()
        return node

    def add_node(self, name: str, start_args: list[str] | None = None) -> NodeProcess:
        """Track a server whose data directory the caller creates (for custom options)."""
        node = NodeProcess(name, self.root / name, start_args=list(start_args or []))
        self.nodes[name] = node
        return node

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log()[-4000:]}" for n in self.nodes.values())


def start_cluster(root: Path, size: int, *, start_args: list[str] | None = None) -> Cluster:
    """A full-mesh cluster: n1 initialised, n2..nN joined through n1, all running."""
    cluster = Cluster(root)
    try:
        first = cluster.init("n1", start_args=start_args)
        for index in range(2, size + 1):
            cluster.join(f"n{index}", peer=first.url, start_args=start_args)
    except BaseException:
        cluster.stop_all()
        raise
    return cluster


# ---------------------------------------------------------------- the admin API


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ApiClient:
    """One /api connection: `await client.call(command, **params)` returns the result."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/api"
        self._ws: ClientConnection | None = None
        self._next_id = 0

    async def __aenter__(self) -> ApiClient:
        self._ws = await connect(self.url, proxy=None, open_timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def call(self, command: str, **params: Any) -> Any:
        assert self._ws is not None, "use `async with ApiClient(url)`"
        self._next_id += 1
        request = {"id": self._next_id, "command": command, "params": params}
        await self._ws.send(json.dumps(request))
        reply = json.loads(await asyncio.wait_for(self._ws.recv(), 30))
        if reply.get("error"):
            raise ApiError(reply["error"].get("code", "?"), reply["error"].get("message", ""))
        return reply["result"]

    async def login(self, domain: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"user": ADMIN, "password": PASSWORD}
        if domain is not None:
            params["domain"] = domain
        return await self.call("login", **params)


async def create_domain(url: str, name: str) -> dict[str, Any]:
    async with ApiClient(url) as api:
        await api.login()
        return await api.call("add-domain", name=name)


async def publish_hosts(url: str, domain: str, names: list[str], *, octet: int = 1) -> Any:
    """One session on `url` adding a host per name, published once; returns the reply."""
    async with ApiClient(url) as api:
        await api.login(domain)
        for index, name in enumerate(names):
            await api.call("add-host", name=name, **{"ipv4-address": f"10.{octet}.0.{index + 1}"})
        return await api.call("publish", comments=f"{len(names)} hosts")


async def host_names(url: str, domain: str) -> list[str]:
    async with ApiClient(url) as api:
        await api.login(domain)
        reply = await api.call("show-hosts", limit=500)
        return sorted(obj["name"] for obj in reply["objects"])


async def status(url: str) -> dict[str, Any]:
    return await collect_status(url, timeout=5.0, credentials=(ADMIN, PASSWORD))


async def wait_converged(
    url: str, *, servers: int, domains: set[str] | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll `status` until `servers` servers are converged (and list `domains`)."""
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            report = await status(url)
        except Exception as exc:  # a server restarting: ask again
            report = {"error": str(exc)}
        else:
            if (
                report["converged"]
                and len(report["servers"]) == servers
                and (domains is None or domains <= set(report["domains"]))
            ):
                return report
        await asyncio.sleep(0.2)
    raise AssertionError(f"no convergence within {timeout} s: {json.dumps(report, indent=1)}")
