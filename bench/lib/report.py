"""What a benchmark shows: aligned text tables, verdicts, the JSON result file, a plot."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


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
