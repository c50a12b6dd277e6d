"""What every crdtmds benchmark shares: timing, statistics, results, workloads, processes.

The benchmarks run on shared, noisy machines, so each one measures the things it compares
side by side in one run (interleaved repetitions where it can) and reports ratios, which
stay meaningful when the absolute figures drift. Every script prints a table and writes
``bench/results/<name>.json`` (plus a PNG when matplotlib, the ``bench`` extra, is
installed).

Importing this module puts the checkout's root and ``cli/`` on ``sys.path``, so the scripts
run from a plain checkout: ``.venv/bin/python bench/<name>.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import inspect
import json
import math
import os
import platform
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_ROOT = REPO_ROOT / "cli"
for _path in (CLI_ROOT, REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# The sync-message codec is the servers' own (imported once the checkout is on the path).
from crdtmds.core.changes import change_hash_and_deps as checked_hash_and_deps  # noqa: E402
from crdtmds.core.changes import split_chunks  # noqa: E402
from crdtmds.errors import ProtocolError  # noqa: E402
from crdtmds.sync.sync_message import SyncMessage  # noqa: E402
from crdtmds.sync.sync_message import encode_sync_message as encode_any_sync_message  # noqa: E402
from crdtmds.sync.sync_message import parse_sync_message as parse_any_sync_message  # noqa: E402

# Server processes started from here run `python -m crdtmds_cli.main`: give them the checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), str(CLI_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
)

DEFAULT_RESULTS_DIR = REPO_ROOT / "bench" / "results"

now = time.perf_counter


# ---------------------------------------------------------------- command line


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        help="folder for the JSON (and PNG) results (default: bench/results)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the workload generator")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG plot")
    return parser


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, mean and the usual percentiles of a sample."""
    return {
        "count": len(values),
        "mean": statistics.fmean(values) if values else math.nan,
        "min": min(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# ---------------------------------------------------------------- timing


async def call_maybe_async(fn: Callable[[], Any]) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock seconds and CPU seconds (every thread of this process) of one call.

    On a shared machine the wall clock also counts time spent waiting for a core; the CPU
    time does not, so it is the steadier of the two for work that never waits on I/O.
    """

    wall: float
    cpu: float


async def measured(fn: Callable[[], Any]) -> Timing:
    """Wall-clock and CPU seconds of one call of `fn` (awaited if need be)."""
    cpu_start = time.process_time()
    start = now()
    await call_maybe_async(fn)
    return Timing(now() - start, time.process_time() - cpu_start)


@dataclass(slots=True)
class Samples:
    """Timings of one case, repetition by repetition."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, timing: Timing) -> None:
        self.wall.append(timing.wall)
        self.cpu.append(timing.cpu)

    def medians(self) -> dict[str, float]:
        return {"wall": median(self.wall), "cpu": median(self.cpu)}

    def to_json(self) -> dict[str, Any]:
        return {
            "wall": self.wall,
            "cpu": self.cpu,
            "median_wall": median(self.wall),
            "median_cpu": median(self.cpu),
            "min_wall": min(self.wall, default=math.nan),
        }


async def interleaved(
    repetitions: int,
    cases: Mapping[str, Callable[[], Any]],
) -> dict[str, Samples]:
    """Time every case once per repetition, alternating their order between repetitions.

    Interleaving spreads the machine's noise over all cases alike; alternating the order
    keeps a warm-up or cache effect from always favouring the same case.
    """
    samples = {name: Samples() for name in cases}
    names = list(cases)
    for repetition in range(repetitions):
        order = names if repetition % 2 == 0 else names[::-1]
        for name in order:
            samples[name].add(await measured(cases[name]))
    return samples


# ---------------------------------------------------------------- memory


def memory_kib() -> dict[str, int]:
    """This process's resident set now (VmRSS) and at its peak (VmHWM), in KiB."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    peak = found.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return {"rss": found.get("VmRSS", peak), "peak": peak}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds another process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes `pids` have used so far; a process that is
    gone counts 0."""
    return sum(seconds for seconds in map(process_cpu_seconds, pids) if not math.isnan(seconds))


def reset_peak_memory() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- output


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare figures between machines."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        from importlib.metadata import version

        automerge_version = version("automerge")
    except Exception:  # the metadata is only informative
        automerge_version = "unknown"
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "automerge": automerge_version,
        "platform": platform.platform(),
    }


def write_results(
    out_dir: Path,
    name: str,
    *,
    parameters: Mapping[str, Any],
    results: Mapping[str, Any],
    targets: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<out_dir>/<name>.json`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    document = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "parameters": dict(parameters),
        "results": dict(results),
        "targets": dict(targets or {}),
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=_json_default) + "\n")
    print(f"results written to {path}")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if magnitude < 1 else f"{value:.2f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned text table: numeric columns right-aligned, text left-aligned."""
    raw = [list(row) for row in rows]
    cells = [[format_value(v) for v in row] for row in raw]
    numeric = [
        bool(raw) and all(isinstance(row[i], int | float) for row in raw)
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(f"\n{title}")
    print(line(list(headers)))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))


def verdict(value: float, target: float, *, at_least: bool) -> str:
    """'met' / 'MISSED' for a figure against its target."""
    if math.isnan(value):
        return "n/a"
    met = value >= target if at_least else value <= target
    return "met" if met else "MISSED"


def plot(out_dir: Path, name: str, draw: Callable[[Any], None], *, enabled: bool = True) -> None:
    """Draw with matplotlib into ``<out_dir>/<name>.png``; skipped (said so) without it."""
    if not enabled:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[bench]'): plot skipped")
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    draw(axes)
    figure.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot written to {path}")


# ---------------------------------------------------------------- workload


@dataclass(slots=True)
class EditGenerator:
    """Realistic policy edits, as (API command, parameters) pairs.

    The mix follows a firewall administrator's day: mostly new hosts, networks, services
    and access rules that use them, plus changes to existing objects and rules. Edits only
    refer to objects this generator created, so they validate in any session that has
    seen this generator's earlier publishes.
    """

    seed: int = 1
    prefix: str = "b"
    rng: random.Random = field(init=False)
    hosts: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _name(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}-{kind}-{self.counter}"

    def _ip(self) -> str:
        n = self.counter
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def next_edit(self) -> tuple[str, dict[str, Any]]:
        roll = self.rng.random()
        if roll < 0.30 or not self.hosts:
            return self.add_host()
        if roll < 0.38:
            name = self._name("net")
            return "add-network", {"name": name, "subnet": self._ip(), "mask-length": 32}
        if roll < 0.45 or not self.services:
            name = self._name("svc")
            self.services.append(name)
            return "add-service-tcp", {"name": name, "port": str(1024 + self.counter % 60000)}
        if roll < 0.75 or not self.rules:
            return self.add_rule()
        if roll < 0.87:
            return "set-host", {
                "name": self.rng.choice(self.hosts),
                "comments": f"edited {self.counter}",
                "color": self.rng.choice(["red", "blue", "orange", "black", "forest green"]),
            }
        return "set-access-rule", {
            "name": self.rng.choice(self.rules),
            "action": self.rng.choice(["Accept", "Drop", "Reject"]),
            "track": self.rng.choice(["None", "Log"]),
            "comments": f"edited {self.counter}",
        }

    def add_host(self) -> tuple[str, dict[str, Any]]:
        name = self._name("host")
        self.hosts.append(name)
        return "add-host", {"name": name, "ipv4-address": self._ip()}

    def add_rule(self, position: str | None = None) -> tuple[str, dict[str, Any]]:
        name = self._name("rule")
        self.rules.append(name)
        params: dict[str, Any] = {
            "name": name,
            "source": self.rng.sample(self.hosts, min(2, len(self.hosts))),
            "destination": [self.rng.choice(self.hosts)] if self.hosts else ["Any"],
            "service": [self.rng.choice(self.services)] if self.services else ["Any"],
            "action": "Accept",
            "track": "Log",
            "position": position or self.rng.choice(["top", "bottom"]),
        }
        return "add-access-rule", params


_OBJECT_COMMANDS = {
    "add-host": ("add", "host"),
    "add-network": ("add", "network"),
    "add-service-tcp": ("add", "service-tcp"),
    "set-host": ("set", "host"),
}


def apply_edit(session: Any, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Apply one generated edit to a `crdtmds.core.session.Session` (one Automerge change)."""
    if command in _OBJECT_COMMANDS:
        verb, obj_type = _OBJECT_COMMANDS[command]
        if verb == "add":
            return session.add_object(obj_type, params)
        return session.set_object(obj_type, params)
    if command == "add-access-rule":
        return session.add_rule(params)
    if command == "set-access-rule":
        return session.set_rule(params)
    raise ValueError(f"no session method for {command}")


def build_domain_documents(
    count: int,
    changes_per_domain: int,
    *,
    edits_per_publish: int,
    seed: int,
) -> dict[str, Any]:
    """Domains made by sessions and publishes in memory (no storage): document id -> doc.

    Each domain gets publishes of `edits_per_publish` generated edits (one change each,
    plus the revision entry) until it holds at least `changes_per_domain` changes.
    """
    from crdtmds.core.domain import Domain
    from crdtmds.core.session import Session
    from crdtmds.sync.protocol import new_document_id

    docs: dict[str, Any] = {}
    for index in range(count):
        domain = Domain.create(f"domain-{index + 1:03d}", new_document_id())
        generator = EditGenerator(seed=seed * 100_003 + index, prefix=f"d{index + 1}")
        session = Session.open(domain, admin=BENCH_ADMIN, server="bench-source")
        made = len(domain.doc.get_changes([]))
        while made < changes_per_domain:
            edits = min(edits_per_publish, max(1, changes_per_domain - made - 1))
            for _ in range(edits):
                apply_edit(session, *generator.next_edit())
            session.prepare_publish()
            session.complete_publish()
            made += edits + 1
        docs[domain.document_id] = domain.doc
    return docs


# ---------------------------------------------------------------- nodes in this process

BENCH_ADMIN = "admin"
BENCH_PASSWORD = "bench-password"


async def init_node_dir(data_dir: Path, name: str = "bench-1", *, port: int = 0) -> None:
    """A fresh Primary server's data directory, with the bench superuser."""
    from crdtmds.bootstrap import init_cluster

    url = f"ws://127.0.0.1:{port}" if port else ""
    await init_cluster(
        data_dir,
        name=name,
        listen_host="127.0.0.1",
        listen_port=port,
        url=url,
        region="bench",
        admin=BENCH_ADMIN,
        password=BENCH_PASSWORD,
    )


async def publish_edits(
    node: Any,
    domain: str,
    generator: EditGenerator,
    *,
    publishes: int,
    edits_per_publish: int,
) -> int:
    """Make `publishes` publishes of generated edits in one session; returns changes made."""
    session = await node.sessions.open(domain, admin=BENCH_ADMIN)
    before = len(session.domain.doc.get_changes([]))
    for _ in range(publishes):
        for _ in range(edits_per_publish):
            apply_edit(session, *generator.next_edit())
        await node.sessions.publish(session)
    await node.sessions.close(session)
    return len(session.domain.doc.get_changes([])) - before


async def populate_domains(
    node: Any,
    count: int,
    *,
    publishes: int,
    edits_per_publish: int,
    seed: int,
    progress: bool = True,
) -> dict[str, int]:
    """Create `count` domains on an in-process node, each filled by published edits.

    Returns the number of Automerge changes per domain name.
    """
    made: dict[str, int] = {}
    for index in range(count):
        name = f"domain-{index + 1:03d}"
        await node.cluster_admin.create_domain(name, created_by=BENCH_ADMIN)
        generator = EditGenerator(seed=seed * 100_003 + index, prefix=f"d{index + 1}")
        made[name] = await publish_edits(
            node, name, generator, publishes=publishes, edits_per_publish=edits_per_publish
        )
        if progress and (index + 1) % 10 == 0:
            print(f"  {index + 1}/{count} domains built", flush=True)
    return made


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async benchmark entry point."""
    return asyncio.run(main())


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` every millisecond; return the seconds it took, or raise."""
    start = now()
    while not condition():
        if now() - start > timeout:
            raise TimeoutError(f"{what}: not done within {timeout:.0f} s")
        await asyncio.sleep(0.001)
    return now() - start


# ---------------------------------------------------------------- server processes


def run_cli(*args: str, timeout: float = 120.0) -> str:
    """Run one `crdtmds` command to completion and return its standard output."""
    from crdtmds.testing.localcluster import cli_command

    completed = subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"crdtmds {args[0]} failed: {completed.stderr.strip()[-2000:]}")
    return completed.stdout


async def read_node_config(data_dir: Path) -> dict[str, Any]:
    """A server's stored configuration (name, cluster id, secret, ...) from its data dir."""
    from crdtmds.config import CONFIG_KEY, DATABASE_FILE
    from crdtmds.storage import Storage

    storage = await Storage.open(data_dir / DATABASE_FILE)
    try:
        config = await storage.get_meta(CONFIG_KEY)
    finally:
        await storage.close()
    if not isinstance(config, dict):
        raise RuntimeError(f"{data_dir} holds no server configuration")
    return config


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
            "--admin", BENCH_ADMIN, "--password", BENCH_PASSWORD, "--json",
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
        from crdtmds.status_query import query_status

        async def all_linked() -> bool:
            for url in self.urls:
                try:
                    status = await query_status(url, timeout=5.0)
                except Exception:  # a server still starting: ask again
                    return False
                wanted = self.size - 1 if links is None else min(links, self.size - 1)
                if len(status.get("peers", [])) < wanted:
                    return False
            return True

        start = now()
        while not await all_linked():
            if now() - start > timeout:
                raise TimeoutError(f"the {self.size} servers did not all connect in {timeout} s")
            await asyncio.sleep(0.1)
        return now() - start

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


# ---------------------------------------------------------------- delay proxies


@dataclass(slots=True)
class ProxyLink:
    """One listening port forwarding to 127.0.0.1:`target_port` with a one-way delay."""

    delay: float
    port: int = 0
    target_port: int = 0
    """Settable at any time: the target of connections accepted from then on."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class DelayProxies:
    """TCP proxies on 127.0.0.1 that hold every chunk for a fixed delay in each direction.

    They run on their own event loop in a background thread, so the benchmark's own loop
    does not slow them down. Order is kept and bandwidth is not limited: the delay is a
    pure one-way latency, like a long link. A connection accepted before its target is
    known is refused (closed), and the server dialing it retries.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self._transports: set[asyncio.BaseTransport] = set()

    def start(self) -> DelayProxies:
        self._thread.start()
        return self

    def add(self, delay: float) -> ProxyLink:
        link = ProxyLink(delay)
        future = asyncio.run_coroutine_threadsafe(self._listen(link), self._loop)
        future.result(10)
        return link

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self, link: ProxyLink) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._forward(link, reader, writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        link.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)

    async def _forward(
        self, link: ProxyLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not link.target_port:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", link.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        for w in (writer, upstream_writer):
            _set_nodelay(w)
            self._transports.add(w.transport)
        try:
            await asyncio.gather(
                _delayed_pump(reader, upstream_writer, link.delay),
                _delayed_pump(upstream_reader, writer, link.delay),
            )
        finally:
            for w in (writer, upstream_writer):
                self._transports.discard(w.transport)
                w.transport.abort()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for transport in list(self._transports):
            transport.abort()


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _delayed_pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy bytes, each chunk written `delay` seconds after it was read, until EOF."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(64 * 1024):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time(), b""))
        await delivering
    except (ConnectionError, OSError):
        pass
    finally:
        delivering.cancel()
        writer.transport.abort()


# ---------------------------------------------------------------- an in-process sync peer

MAX_FRAME = 256 * 1024 * 1024
"""Frame size limit of the benchmark's own WebSocket peers (a whole domain may be one)."""


class MemoryDocuments:
    """Live documents of an in-process peer (the `DocumentStore` that `Gossip` needs)."""

    def __init__(
        self, docs: Mapping[str, Any] | None = None, *, accept: bool | set[str] = False
    ) -> None:
        self.docs: dict[str, Any] = dict(docs or {})
        self.accept = accept
        """True: take any document a peer offers; a set: take only those ids."""

    def get_document(self, document_id: str) -> Any:
        return self.docs.get(document_id)

    def accept_document(self, document_id: str, peer: Any) -> Any:
        wanted = self.accept if isinstance(self.accept, bool) else document_id in self.accept
        if not wanted:
            return None
        from automerge.core import Document

        doc = self.docs[document_id] = Document()
        return doc

    def shared_documents(self, peer: Any) -> list[str]:
        return list(self.docs)


def server_join_metadata(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Join metadata proving knowledge of a cluster's secret, as a server dialing it."""
    from crdtmds.core.auth import ServerCredentials
    from crdtmds.net.admission import METADATA_KEY

    creds = ServerCredentials.create(config["secret"], config["cluster_id"], name)
    identity = {
        "cluster": config["cluster_id"],
        "server": name,
        "name": name,
        "region": "bench",
        "role": "secondary",
        "url": "",
        "cluster-document": config["cluster_document_id"],
    }
    return {"isEphemeral": False, METADATA_KEY: {**identity, **creds.to_metadata()}}


class SyncPeer:
    """One automerge-repo connection from this process to a server's /sync endpoint.

    The protocol work is `crdtmds.sync.gossip.Gossip` (the servers' own sans-I/O engine); this
    class only moves its frames over a WebSocket. Received changes are applied to the
    documents of `store`; `on_changed(document_id, before_heads)` is called for each
    batch. The heads the server announces in its sync messages are kept in
    `announced_heads`, so a caller can tell when the server holds everything.
    `handling_cpu` is the CPU time this process spent on the received frames.
    """

    def __init__(
        self,
        url: str,
        store: MemoryDocuments,
        *,
        metadata: Mapping[str, Any] | None = None,
        query: str = "",
        name: str = "bench-peer",
        on_changed: Callable[[str, list[bytes]], None] | None = None,
    ) -> None:
        from crdtmds.sync.gossip import Gossip

        self.url = url.rstrip("/") + "/sync" + (f"?{query}" if query else "")
        self.store = store
        self.metadata = dict(metadata or {"isEphemeral": True})
        self.peer_id = f"{name}-{random.randrange(1 << 32):08x}"
        self.gossip = Gossip(self.peer_id, store, max_message_size=MAX_FRAME)
        self.on_changed = on_changed
        self.announced_heads: dict[str, list[bytes]] = {}
        self.frames_received = 0
        self.bytes_received = 0
        self.handling_cpu = 0.0
        self.progress = asyncio.Event()
        self._conn = "c"
        self._ws: Any = None
        self._outbox: list[bytes] = []
        """Frames of our own, sent after the engine's."""
        self._wake = asyncio.Event()
        self._queued = 0
        self._sent = 0
        """Frames of our own queued and handed to the socket."""
        self._sent_event = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: str | None = None

    async def start(self, timeout: float = 30.0) -> SyncPeer:
        from websockets.asyncio.client import connect

        self._ws = await connect(
            self.url, proxy=None, max_size=MAX_FRAME, compression=None, open_timeout=timeout
        )
        self.gossip.open_connection(self._conn, dialer=True, local_metadata=self.metadata)
        self._tasks = [
            asyncio.create_task(self._send_loop()),
            asyncio.create_task(self._receive_loop()),
        ]
        self._wake.set()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            await self.close()
            raise TimeoutError(
                f"no automerge-repo handshake with {self.url} in {timeout} s ({self.failure})"
            ) from None
        return self

    def request(self, document_id: str) -> None:
        """Ask the server for a document (a repo client must, to be sent it)."""
        self.gossip.request_document(self._conn, document_id)
        self._wake.set()

    def document_changed(self, document_id: str) -> None:
        """A local change to one of `store`'s documents: offer it to the server."""
        self.gossip.document_changed(document_id)
        self._wake.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)

    async def flushed(self) -> None:
        """Return once every frame of ours queued so far has been handed to the socket."""
        target = self._queued
        while self._sent < target and self.failure is None:
            self._sent_event.clear()
            await self._sent_event.wait()

    def _send(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._queued += 1
        self._wake.set()

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                own, self._outbox = self._outbox, []
                for frame in self.gossip.data_to_send(self._conn) + own:
                    await self._ws.send(frame)
                self._sent += len(own)
                self._sent_event.set()
        except Exception as exc:  # a closed socket ends the peer; the caller sees `failure`
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
            self._sent_event.set()
            self.progress.set()

    async def _receive_loop(self) -> None:
        from crdtmds.sync.protocol import decode

        try:
            async for frame in self._ws:
                arrived = now()
                cpu_start = time.thread_time()
                self.frames_received += 1
                self.bytes_received += len(frame)
                self._receive(frame, decode(frame, max_size=MAX_FRAME), arrived)
                self._wake.set()
                self.progress.set()
                self.handling_cpu += time.thread_time() - cpu_start
        except Exception as exc:  # a closed socket ends the peer; the caller sees `failure`
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
            self.progress.set()

    def _receive(self, frame: bytes, message: Any, arrived: float) -> None:
        """Hand one frame (decoded as `message`, received at `arrived`) to the engine."""
        from crdtmds.sync.gossip import ConnectionFailed, DocumentChanged, PeerConnected
        from crdtmds.sync.protocol import Request, Sync
        from crdtmds.sync.sync_message import sync_message_heads

        if isinstance(message, Sync | Request):
            heads = sync_message_heads(message.data)
            if heads is not None:
                self.announced_heads[message.document_id] = heads
        for event in self.gossip.receive(self._conn, frame):
            if isinstance(event, PeerConnected):
                self._connected.set()
            elif isinstance(event, DocumentChanged):
                if self.on_changed is not None:
                    self.on_changed(event.document_id, event.before_heads)
                self.gossip.persisted(event.document_id)
            elif isinstance(event, ConnectionFailed):
                self.failure = event.message

    def server_has(self, document_id: str, heads: Sequence[bytes]) -> bool:
        """Whether the server's latest announced heads for the document are `heads`."""
        return sorted(self.announced_heads.get(document_id, [])) == sorted(heads)


# ---------------------------------------------------------------- an observer of change graphs
#
# An observer only needs to know which changes a server holds and when each arrived, not
# what they do. Applying them to a real Automerge document costs time that grows with the
# document's history, taken from the servers being measured on the same machine; reading
# each change's hash and dependencies from its chunk header costs a few microseconds.
#
# The automerge sync message (automerge's sync.rs), v1 (0x42) and v2 (0x43) alike:
#
#     type byte      0x42 (v1) or 0x43 (v2)
#     heads, need    uleb128 count, 32-byte hashes each (sorted)
#     have           uleb128 count of (last-sync hashes, uleb128-prefixed bloom filter)
#     changes        uleb128 count of uleb128-prefixed entries; the receiver loads them
#                    concatenated, so an entry is one or more chunks: change chunks
#                    (plain or deflated) or, in v2, a whole saved document
#     capabilities   optional: uleb128 count of bytes (0x01 v1, 0x02 v2)
#
# A peer sends the changes after `have`'s last sync that its bloom filter does not hold
# (an empty filter holds none), less those it already sent on this connection, so an
# answer whose heads and last sync are exactly what the observer holds gets each new
# change once. Advertising no capability keeps the peer on v1 change lists: v2 peers may
# send a whole document instead when more than a third of the document is new.

_DOCUMENT_CHUNK = 0


def parse_sync_message(data: bytes) -> SyncMessage:
    """The fields of an encoded automerge sync message, nothing after them; ValueError if
    it is not one."""
    try:
        return parse_any_sync_message(data, exact=True)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None


def encode_sync_message(
    heads: Sequence[bytes],
    need: Sequence[bytes] = (),
    have: Sequence[Sequence[bytes]] = (),
    changes: Sequence[bytes] = (),
) -> bytes:
    """A v1 sync message without capabilities; each `have` entry is a last-sync set sent
    with an empty bloom filter (it holds nothing), each of `changes` one change chunk."""
    message = SyncMessage(
        heads=sorted(heads),
        need=sorted(need),
        have=[(sorted(last_sync), b"") for last_sync in have],
        changes=list(changes),
    )
    return encode_any_sync_message(message)


def change_hash_and_deps(chunk: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """The hash and the dependencies of one change chunk (plain or deflated).

    The hash is the SHA-256 of the uncompressed chunk's type, length and body; the body
    starts with the dependencies. ValueError if the chunk is malformed.
    """
    try:
        return checked_hash_and_deps(chunk)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None


def sync_message_changes(message: SyncMessage) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """(hash, deps) of every change a sync message carries, in the order it carries them."""
    found = []
    for entry in message.changes:
        for chunk in split_chunks(entry):
            if chunk[8] == _DOCUMENT_CHUNK:
                found += document_changes(chunk)
            else:
                found.append(change_hash_and_deps(chunk))
    return found


def document_changes(chunk: bytes) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """(hash, deps) of every change of a saved document chunk, in causal order.

    Only a v2 peer sends one, so this rare path lets the core rebuild the changes.
    """
    from automerge.core import Document

    try:
        changes = Document.load(chunk).get_changes([])
    except Exception as exc:  # the binding raises a plain Exception on bad input
        raise ValueError(f"invalid document chunk: {exc}") from None
    return [(change.hash, tuple(change.deps)) for change in changes]


@dataclass(slots=True)
class ChangeGraph:
    """The changes of one document a peer holds: hashes, arrival times and heads.

    A change is held once every change it depends on is; one that arrives before its
    dependencies waits (as in Automerge), with the time it arrived.
    """

    arrived: dict[bytes, float] = field(default_factory=dict)
    """Held change hash -> when it arrived (`now()` clock)."""
    heads: set[bytes] = field(default_factory=set)
    """Held changes that no held change depends on."""
    waiting: dict[bytes, tuple[tuple[bytes, ...], float]] = field(default_factory=dict)
    """Changes with a missing dependency: hash -> (deps, arrival)."""

    def add(self, change: bytes, deps: Sequence[bytes], arrived: float) -> list[bytes]:
        """Take one change; returns the changes held from now on (it and any it freed)."""
        if change in self.arrived or change in self.waiting:
            return []
        self.waiting[change] = (tuple(deps), arrived)
        held: list[bytes] = []
        progress = True
        while progress:
            progress = False
            for waiting, (waiting_deps, at) in list(self.waiting.items()):
                if all(dep in self.arrived for dep in waiting_deps):
                    self._hold(waiting, waiting_deps, at)
                    held.append(waiting)
                    progress = True
        return held

    def _hold(self, change: bytes, deps: tuple[bytes, ...], arrived: float) -> None:
        del self.waiting[change]
        self.arrived[change] = arrived
        self.heads.difference_update(deps)
        self.heads.add(change)

    def missing(self) -> list[bytes]:
        """Dependencies of waiting changes that are neither held nor waiting."""
        wanted = {dep for deps, _ in self.waiting.values() for dep in deps}
        return sorted(d for d in wanted if d not in self.arrived and d not in self.waiting)

    def sorted_heads(self) -> list[bytes]:
        return sorted(self.heads)


@dataclass(frozen=True, slots=True)
class Offer:
    """Changes of our own and the sync message that carries them, encoded beforehand.

    The message announces `heads`, the heads once the peer has these changes, and one
    `have` whose last sync is those heads with an empty bloom filter. A last sync at the
    heads the peer acknowledged would make it send back every change since then that the
    filter does not hold (these ones among them); at the heads after the changes, which
    the peer holds by the time it answers (the message carries every change it lacks up
    to them, on a connection that keeps order), it has nothing to send back.
    """

    changes: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    """(hash, deps) of each change, in the order carried."""
    chunks: tuple[bytes, ...]
    heads: list[bytes]
    data: bytes
    """The encoded automerge sync message."""
    frame: bytes = b""
    """The message in its automerge-repo envelope, when a connection has wrapped it."""


@dataclass(slots=True)
class GraphSync:
    """The automerge sync protocol with one peer, for a `ChangeGraph`.

    It answers as Automerge's own sync state would (same reply and silence rules) with
    heads = what it holds, need = what waiting changes lack, and one `have` whose last
    sync is its heads and whose bloom filter is empty, so the peer sends each change it
    has beyond those heads exactly once.

    It writes only changes built elsewhere: `prepare` encodes the messages that will carry
    them (before anything is timed), `take` records one as sent. A change the peer
    declares it needs is sent with the next answer if it is one of those.
    """

    graph: ChangeGraph = field(default_factory=ChangeGraph)
    their_heads: list[bytes] | None = None
    their_need: list[bytes] = field(default_factory=list)
    last_sent_heads: list[bytes] | None = None
    in_flight: bool = False
    heard: bool = False
    """Whether the peer has sent a sync message about the document."""
    spoken: bool = False
    """Whether we have sent one."""
    own: dict[bytes, bytes] = field(default_factory=dict)
    """Chunks of the changes we have offered, by hash."""

    def receive(self, data: bytes, arrived: float) -> list[bytes]:
        """Take one sync message; returns the changes held from now on."""
        message = parse_sync_message(data)
        self.in_flight = False
        self.heard = True
        held: list[bytes] = []
        for change, deps in sync_message_changes(message):
            held += self.graph.add(change, deps, arrived)
        self.their_heads = message.heads
        self.their_need = message.need
        return held

    def generate(self) -> bytes | None:
        """The next sync message for the peer, or None when there is nothing to say."""
        heads = self.graph.sorted_heads()
        needed = [self.own[h] for h in self.their_need if h in self.own]
        self.their_need = []
        unchanged = self.spoken and heads == self.last_sent_heads
        if not needed and unchanged and (heads == self.their_heads or self.in_flight):
            return None
        self.spoken = True
        self.last_sent_heads = heads
        self.in_flight = True
        return encode_sync_message(heads, self.graph.missing(), [heads], needed)

    def prepare(self, batches: Iterable[Sequence[bytes]]) -> list[Offer]:
        """One offer per batch of change chunks (each in causal order after what the
        graph holds and the batches before it), to be taken in that order."""
        known = self.graph
        graph = ChangeGraph(dict(known.arrived), set(known.heads), dict(known.waiting))
        offers = []
        for chunks in batches:
            changes = tuple(change_hash_and_deps(chunk) for chunk in chunks)
            for change, deps in changes:
                graph.add(change, deps, 0.0)
            heads = graph.sorted_heads()
            data = encode_sync_message(heads, graph.missing(), [heads], chunks)
            offers.append(Offer(changes, tuple(chunks), heads, data))
        return offers

    def take(self, offer: Offer, sent: float) -> None:
        """Record an offer of `prepare` as sent at `sent`: its changes are ours now."""
        for (change, deps), chunk in zip(offer.changes, offer.chunks, strict=True):
            self.graph.add(change, deps, sent)
            self.own[change] = chunk
        self.spoken = True
        self.last_sent_heads = offer.heads
        self.in_flight = True


class GraphPeer(SyncPeer):
    """A `SyncPeer` that keeps only the change graph of the documents it requests.

    The handshake and every other document go through `Gossip` as in `SyncPeer` (with no
    documents of its own); sync messages about a requested document go to its
    `GraphSync`, whose `graph.arrived` says when each change got here and whose
    `graph.heads` what the server holds.
    """

    def __init__(
        self,
        url: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        query: str = "",
        name: str = "bench-observer",
    ) -> None:
        super().__init__(url, MemoryDocuments(), metadata=metadata, query=query, name=name)
        self.syncs: dict[str, GraphSync] = {}

    def graph(self, document_id: str) -> ChangeGraph:
        return self.syncs[document_id].graph

    def holds(self, document_id: str, heads: Sequence[bytes]) -> bool:
        """Whether the server sent us exactly the changes up to `heads`."""
        sync = self.syncs.get(document_id)
        return sync is not None and sync.graph.heads == set(heads)

    def request(self, document_id: str) -> None:
        """Follow a document: ask the server for it (after `start`)."""
        sync = self.syncs.setdefault(document_id, GraphSync())
        self._answer(document_id, sync)

    def prepare(self, document_id: str, batches: Iterable[Sequence[bytes]]) -> list[Offer]:
        """Offers of the change chunks in `batches` (see `GraphSync.prepare`), each wrapped
        in its `sync` envelope for this connection (after `start`)."""
        from crdtmds.sync.protocol import Sync, encode

        peer = self.gossip.peer(self._conn)
        if peer is None:
            raise RuntimeError(f"{self.url}: no peer to write to")
        sync = self.syncs.setdefault(document_id, GraphSync())
        return [
            replace(offer, frame=encode(Sync(self.peer_id, peer.peer_id, document_id, offer.data)))
            for offer in sync.prepare(batches)
        ]

    def write(self, document_id: str, offer: Offer) -> None:
        """Send one prepared offer (after the ones prepared before it)."""
        self.syncs[document_id].take(offer, now())
        self._send(offer.frame)

    async def stream(self, document_id: str, offers: Sequence[Offer]) -> None:
        """Send prepared offers one by one, yielding to the event loop after each, and
        return once every one has been handed to the socket."""
        for offer in offers:
            self.write(document_id, offer)
            await asyncio.sleep(0)
        await self.flushed()

    def _answer(self, document_id: str, sync: GraphSync) -> None:
        from crdtmds.sync.protocol import Request, Sync, encode

        data = sync.generate()
        peer = self.gossip.peer(self._conn)
        if data is None or peer is None:
            return
        kind = Sync if sync.heard or sync.graph.heads else Request
        self._send(encode(kind(self.peer_id, peer.peer_id, document_id, data)))

    def _receive(self, frame: bytes, message: Any, arrived: float) -> None:
        from crdtmds.sync.protocol import DocUnavailable, Request, Sync

        sync = self.syncs.get(getattr(message, "document_id", ""))
        if sync is None:
            super()._receive(frame, message, arrived)
        elif isinstance(message, Sync | Request):
            sync.receive(message.data, arrived)
            self.announced_heads[message.document_id] = sync.their_heads or []
            self._answer(message.document_id, sync)
        elif not isinstance(message, DocUnavailable):  # not there yet: it comes when it does
            super()._receive(frame, message, arrived)


OBSERVER_KINDS = ("graph", "document")


def add_observer_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--observer",
        choices=OBSERVER_KINDS,
        default="graph",
        help="what each observer keeps: the change graph (default) or a whole document",
    )


def observer_peer(
    kind: str,
    url: str,
    document_id: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    query: str = "",
    name: str = "bench-observer",
) -> SyncPeer:
    """A peer that watches `document_id` on `url`, not started: a `GraphPeer` ("graph",
    the change graph only) or a `SyncPeer` applying every change to an Automerge document
    ("document"), whose CPU cost grows with the document's history."""
    if kind == "graph":
        return GraphPeer(url, metadata=metadata, query=query, name=name)
    store = MemoryDocuments(accept={document_id})
    return SyncPeer(url, store, metadata=metadata, query=query, name=name)
