"""Clusters of real server processes (`crdtmds init`, `join`, `start`) on loopback, and
the command-line calls and status queries that set them up."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from crdtmds.testing.delay_proxies import DelayProxies, ProxyLink
from lib.credentials import BENCH_ADMIN, BENCH_PASSWORD
from lib.node_dirs import read_node_config
from lib.timing import now


def run_cli(*args: str, timeout: float = 120.0) -> str:
    """Run one `crdtmds` command to completion and return its standard output."""
    from crdtmds.testing.localcluster import cli_command

    completed = subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"crdtmds {args[0]} failed: {completed.stderr.strip()[-2000:]}")
    return completed.stdout


async def wait_for_status(
    urls: list[str],
    accept: Callable[[dict[str, Any]], bool],
    timeout: float,
    failure: str,
) -> float:
    """Ask every server for its status every 0.1 s until `accept` holds for all of them;
    returns the seconds it took, or raises TimeoutError(`failure`). A server that does not
    answer (still starting) is asked again."""
    from crdtmds.status_query import query_status

    async def everywhere() -> bool:
        for url in urls:
            try:
                status = await query_status(
                    url, timeout=5.0, credentials=(BENCH_ADMIN, BENCH_PASSWORD)
                )
            except Exception:  # a server still starting: ask again
                return False
            if not accept(status):
                return False
        return True

    start = now()
    while not await everywhere():
        if now() - start > timeout:
            raise TimeoutError(failure)
        await asyncio.sleep(0.1)
    return now() - start


class BenchCluster:
    """`size` real servers on 127.0.0.1 (processes of `crdtmds start`) under `root`.

    Without a delay they form the default full mesh. With `delay_ms`, every server dials
    every other one through its own delay proxy (one per direction of each link, with
    `--no-mesh` and one `--peer` per proxy), and bytes between servers of different
    regions take `delay_ms` longer each way. Servers are spread over `regions` regions
    round-robin (default: each server is its own region). With `star` (and no delay),
    the other servers dial only the first one, which relays between them.
    """

    def __init__(
        self,
        root: Path,
        size: int,
        *,
        delay_ms: float = 0.0,
        regions: int | None = None,
        star: bool = False,
    ) -> None:
        from crdtmds.testing.localcluster import LocalServer

        self.root = root
        self.size = size
        self.delay = delay_ms / 1000.0
        self.regions = regions or size
        self.servers = [
            LocalServer(
                name=f"s{i + 1}",
                data_dir=root / f"s{i + 1}",
                region=f"region-{i % self.regions + 1}",
            )
            for i in range(size)
        ]
        self.proxies: DelayProxies | None = None
        self.links: dict[tuple[int, int], ProxyLink] = {}
        self.init_args: list[str] = []
        """Extra `crdtmds init` options of the first server, e.g. `--tls-cert F --tls-key K`."""
        if star:
            for server in self.servers:
                server.start_args = ["--no-mesh"]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self) -> BenchCluster:
        """Initialise the first server, then join and start the others through it."""
        if self.delay > 0:
            self._make_proxies()
        first = self.servers[0]
        run_cli(
            "init", "--data", str(first.data_dir), "--name", first.name,
            "--listen", "127.0.0.1:0", "--region", first.region,
            "--admin", BENCH_ADMIN, "--password", BENCH_PASSWORD, "--json", *self.init_args,
        )  # fmt: skip
        self._start_server(0)
        for index in range(1, self.size):
            server = self.servers[index]
            peer = self.links[index, 0].url if self.links else first.url
            run_cli(
                "join", "--data", str(server.data_dir), "--name", server.name,
                "--listen", "127.0.0.1:0", "--region", server.region,
                "--peer", peer, "--secret", self.secret(), "--timeout", "60",
            )  # fmt: skip
            self._start_server(index)
        return self

    def secret(self) -> str:
        return str(run_async_in_thread(read_node_config(self.servers[0].data_dir))["secret"])

    def _make_proxies(self) -> None:
        self.proxies = DelayProxies().start()
        for a in range(self.size):
            for b in range(self.size):
                if a != b:
                    delayed = self.servers[a].region != self.servers[b].region
                    self.links[a, b] = self.proxies.add(self.delay if delayed else 0.0)
        for a, server in enumerate(self.servers):
            server.start_args = ["--no-mesh"]
            for b in range(self.size):
                if a != b:
                    server.start_args += ["--peer", self.links[a, b].url]

    def _start_server(self, index: int) -> None:
        url = self.servers[index].start(log_level="warning")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        for (_, b), link in self.links.items():
            if b == index:
                link.target_port = port

    async def wait_connected(self, timeout: float = 60.0, *, links: int | None = None) -> float:
        """Wait until every server has live links with `links` others (default: all)."""
        wanted = self.size - 1 if links is None else min(links, self.size - 1)
        return await wait_for_status(
            self.urls,
            lambda status: len(status.get("peers", [])) >= wanted,
            timeout,
            f"the {self.size} servers did not all connect in {timeout} s",
        )

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.proxies is not None:
            self.proxies.close()

    def __enter__(self) -> BenchCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_async_in_thread(coroutine: Awaitable[Any]) -> Any:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)  # type: ignore[arg-type]
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
