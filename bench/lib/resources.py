"""CPU time and memory of processes, read from Linux's /proc."""

from __future__ import annotations

import contextlib
import math
import os
import resource
from pathlib import Path


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


def run_queue_seconds(pids: list[int]) -> float:
    """Seconds the processes `pids` (their main threads) have spent runnable but waiting for
    a CPU so far (Linux /proc/PID/schedstat): on a shared machine, how much the others'
    load held them back. A process that is gone counts 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    return total / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy so far, all processes
    together (Linux /proc/stat: all but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pin_to_cpu(pid: int, cpu: int) -> None:
    """Every thread of process `pid` (0: this one) to run on `cpu` only; threads it
    starts later inherit that."""
    task_dir = Path(f"/proc/{pid or os.getpid()}/task")
    for task in task_dir.iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), {cpu})
