"""A cluster of real crdtmds server processes on loopback, for the demo, tests and benchmarks.

Each server is a separate `crdtmds start` process with its own data directory and an
OS-chosen port. The first is initialised as the Primary; the others join it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crdtmds.errors import ClusterError

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def cli_command(*args: str) -> list[str]:
    """The argv that runs the crdtmds command line with this interpreter."""
    return [sys.executable, "-m", "crdtmds_cli.main", *args]


@dataclass
class LocalServer:
    """One `crdtmds start` process, its data directory and its log file (beside it)."""

    name: str
    data_dir: Path
    region: str = "default"
    process: subprocess.Popen[str] | None = None
    url: str = ""
    start_args: list[str] = field(default_factory=list)
    """Extra `crdtmds start` options, e.g. `--no-mesh --peer URL`."""
    _starting: bool = field(default=False, repr=False)
    """Launched, its `listening on` line not read yet (`url` still names the last run)."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def start(
        self,
        *,
        log_level: str = "info",
        timeout: float = START_TIMEOUT,
        preexec: Callable[[], None] | None = None,
    ) -> str:
        """Start the server process and wait for its `listening on URL` line."""
        self.launch(log_level=log_level, preexec=preexec)
        return self.wait_ready(timeout)

    def launch(self, *, log_level: str = "info", preexec: Callable[[], None] | None = None) -> None:
        """Start the server process without waiting for it (see `wait_ready`).

        `preexec` runs in the child before the server starts (a umask, a resource limit).
        """
        if self.running:
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                cli_command("start", "--data", str(self.data_dir), "--log-level", log_level,
                            *self.start_args),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=preexec,
            )  # fmt: skip
        self._starting = True

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        """Wait for the launched process to print its URL; returns it."""
        if self.process is None:
            raise ClusterError(f"server {self.name} was not launched")
        if self._starting:
            self.url = self._read_listening_line(timeout)
            self._starting = False
        return self.url

    def _read_listening_line(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(remaining):
                    break
                line = self.process.stdout.readline()
                if line.startswith("listening on "):
                    return line.removeprefix("listening on ").strip()
                if not line and self.process.poll() is not None:
                    raise ClusterError(
                        f"server {self.name} exited with code {self.process.returncode}:\n"
                        f"{self.log()[-3000:]}"
                    )
        self.kill()
        raise ClusterError(f"server {self.name} did not start within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def terminate(self) -> None:
        """Ask the server to shut down gracefully (SIGTERM) without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the process to exit; SIGKILL it if it does not in time."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        self.terminate()
        self.wait_stopped()


def _run_cli(*args: str, timeout: float = START_TIMEOUT) -> str:
    return _finish_cli(_launch_cli(*args), args[0], timeout)


def _launch_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish_cli(process: subprocess.Popen[str], command: str, timeout: float) -> str:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise ClusterError(f"crdtmds {command} did not finish within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise ClusterError(f"crdtmds {command} failed: {err.strip()}")
    return out


class LocalCluster:
    """N servers on 127.0.0.1 under `root`; use as a context manager to stop them all."""

    def __init__(
        self,
        root: str | Path,
        size: int = 3,
        *,
        admin: str = "admin",
        password: str = "admin-password",
        regions: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.admin = admin
        self.password = password
        self.secret = ""
        self.servers = [
            LocalServer(
                name=f"s{i + 1}",
                data_dir=self.root / f"s{i + 1}",
                region=(regions[i % len(regions)] if regions else "default"),
            )
            for i in range(size)
        ]

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = START_TIMEOUT) -> LocalCluster:
        """Initialise and start the Primary, then join and start every Secondary.

        The Secondaries join, and then start, in parallel: each is its own process.
        `timeout` bounds each step (many servers on few cores need more).
        """
        primary = self.servers[0]
        output = _run_cli(
            "init", "--data", str(primary.data_dir), "--name", primary.name,
            "--listen", "127.0.0.1:0", "--region", primary.region,
            "--admin", self.admin, "--password", self.password, "--json",
        )  # fmt: skip
        self.secret = json.loads(output)["secret"]
        primary.start(timeout=timeout)
        secondaries = self.servers[1:]
        joins = [self._launch_join(server, peer=primary.url) for server in secondaries]
        for join in joins:
            _finish_cli(join, "join", timeout)
        for server in secondaries:
            server.launch()
        for server in secondaries:
            server.wait_ready(timeout)
        return self

    def join(self, server: LocalServer, *, peer: str) -> None:
        _finish_cli(self._launch_join(server, peer=peer), "join", START_TIMEOUT)

    def _launch_join(self, server: LocalServer, *, peer: str) -> subprocess.Popen[str]:
        return _launch_cli(
            "join", "--data", str(server.data_dir), "--name", server.name,
            "--listen", "127.0.0.1:0", "--region", server.region,
            "--peer", peer, "--secret", self.secret,
        )  # fmt: skip

    def add_server(self, name: str, *, region: str = "default") -> LocalServer:
        """Join one more server (a late joiner) through the first running server."""
        server = LocalServer(name=name, data_dir=self.root / name, region=region)
        peer = next(s.url for s in self.servers if s.running)
        self.join(server, peer=peer)
        server.start()
        self.servers.append(server)
        return server

    def stop(self) -> None:
        """Stop every server: SIGTERM to all first, so they shut down in parallel."""
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            server.wait_stopped()
