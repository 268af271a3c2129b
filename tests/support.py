"""Helpers every test may use: waiting for a condition, and a clock moved by the test.

Written once here; a test module imports them rather than keeping its own copy.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

EVENTUALLY_S = 15.0
POLL_S = 0.02


async def eventually(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    *,
    timeout_s: float = EVENTUALLY_S,
    poll_s: float = POLL_S,
) -> None:
    """Polls ``condition`` (plain or async) until it is truthy; fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(poll_s)


def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout_s: float = EVENTUALLY_S,
    poll_s: float = POLL_S,
) -> None:
    """The blocking form of :func:`eventually`, for tests without an event loop."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


class FakeClock:
    """Seconds, moved only by the test: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    @property
    def now(self) -> float:
        return self.now_s

    @now.setter
    def now(self, value: float) -> None:
        self.now_s = value

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
