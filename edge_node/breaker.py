"""A circuit breaker for calls to a dependency that may stall (the region's Redis).

Closed, calls go through; ``failures`` failures in a row open it. Open, calls are refused
at once (the caller answers from what it holds) until ``cooldown_s`` has passed; then one
call is let through as a probe (half-open): its success closes the breaker, its failure
opens it for another cool-down. A probe that never reports back (its task was cancelled)
stops blocking the next probe after one more cool-down.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None
        self.opened = 0  # times it opened, for metrics

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probe_started is not None or self._cooled_down():
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go out now (when it may, it must report success or failure)."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if self._probe_started is not None and now - self._probe_started < self.cooldown_s:
            return False  # one probe at a time
        if not self._cooled_down():
            return False
        self._probe_started = now
        return True

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_started = None

    def failed(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            if self._opened_at is None:
                self.opened += 1
            self._opened_at = self._clock()
            self._probe_started = None

    def _cooled_down(self) -> bool:
        assert self._opened_at is not None
        return self._clock() - self._opened_at >= self.cooldown_s
