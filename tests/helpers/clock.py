"""A clock that stands still until a test moves it."""

from __future__ import annotations


class FakeClock:
    """Called like `time.monotonic`; returns `now`, which tests set or advance."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
