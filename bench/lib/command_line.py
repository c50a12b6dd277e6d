"""The command line every benchmark script shares, and running its async entry point."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lib import REPO_ROOT

DEFAULT_RESULTS_DIR = REPO_ROOT / "bench" / "results"


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


def int_list(text: str) -> list[int]:
    """A comma-separated list of numbers (`--sizes 3,5,9`), sorted, each once."""
    return sorted({int(item) for item in text.split(",") if item.strip()})


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async benchmark entry point."""
    return asyncio.run(main())
