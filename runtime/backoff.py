"""The one backoff of the product: capped exponential delays with equal jitter.

Every retry loop (connecting to NATS, re-reading a bucket, re-sending to Kafka, fetching a
bundle) waits with a :class:`Backoff`. Delays double from ``initial_s`` up to ``max_s``;
each is drawn from ``[d/2, d]`` so that many processes that lost the same server do not
come back in step. After a connection has stayed up ``stable_after_s``, the next failure
starts again from ``initial_s`` (:meth:`Backoff.succeeded`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from protocol.errors import ProtocolError


class BackoffSettingsError(ProtocolError):
    code = "bad_backoff"


class Backoff:
    def __init__(
        self,
        initial_s: float = 0.05,
        max_s: float = 5.0,
        *,
        stable_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise BackoffSettingsError("backoff needs 0 < initial_s <= max_s", field="initial_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self.stable_after_s = max_s if stable_after_s is None else stable_after_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._ceiling_s = initial_s
        self._up_since: float | None = None
        self.failures = 0  # consecutive, since the last reset

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling, up to ``max_s``."""
        ceiling = self._ceiling_s
        self._ceiling_s = min(self.max_s, self._ceiling_s * 2)
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._ceiling_s = self.initial_s
        self.failures = 0

    def succeeded(self) -> None:
        """An attempt worked (a connection is up): remember since when."""
        self._up_since = self._clock()

    def lost(self) -> None:
        """What :meth:`succeeded` opened has ended; reset if it had been stable."""
        if self._up_since is not None and self._clock() - self._up_since >= self.stable_after_s:
            self.reset()
        self._up_since = None

    async def sleep(self, stop: asyncio.Event | None = None) -> bool:
        """Waits :meth:`next_delay`; returns False at once (without waiting) if ``stop`` is set."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
            return True
        if stop.is_set():
            return False
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            return True
        return False
