"""Every test in tests/scenario is `slow`: it starts server processes (or runs the
benchmarks); `pytest -m "not slow"` leaves the folder out."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's collection hook sees the items of the whole session, not just this folder.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.slow)
