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
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_ROOT = REPO_ROOT / "cli"
for _path in (CLI_ROOT, REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

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


async def timed(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds one call of `fn` takes (awaited if it returns an awaitable)."""
    return (await measured(fn)).wall


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
    """Apply one generated edit to a `crdtmds.session.Session` (one Automerge change)."""
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


# ---------------------------------------------------------------- nodes in this process

BENCH_ADMIN = "admin"
BENCH_PASSWORD = "bench-password"


async def init_node_dir(data_dir: Path, name: str = "bench-1", *, port: int = 0) -> None:
    """A fresh Primary server's data directory, with the bench superuser."""
    from crdtmds.node import Node

    url = f"ws://127.0.0.1:{port}" if port else ""
    await Node.initialise(
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
    session = await node.open_session(domain, admin=BENCH_ADMIN)
    before = len(session.domain.doc.get_changes([]))
    for _ in range(publishes):
        for _ in range(edits_per_publish):
            apply_edit(session, *generator.next_edit())
        await node.publish(session)
    await node.close_session(session)
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
        await node.create_domain(name, created_by=BENCH_ADMIN)
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
