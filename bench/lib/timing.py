"""Timing calls (wall clock and CPU), interleaved repetitions, and waiting for a condition."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.stats import median

now = time.perf_counter
"""The clock of every timestamp the benchmarks take."""


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


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` every millisecond; return the seconds it took, or raise."""
    start = now()
    while not condition():
        if now() - start > timeout:
            raise TimeoutError(f"{what}: not done within {timeout:.0f} s")
        await asyncio.sleep(0.001)
    return now() - start
