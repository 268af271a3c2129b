"""Token buckets per key (session id, client address), bounded in the keys they track."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    """``rate`` tokens a second up to ``burst``; the least recently used keys are forgotten
    beyond ``max_keys`` (a forgotten key starts again with a full bucket)."""

    __slots__ = ("_buckets", "burst", "clock", "max_keys", "rate")

    def __init__(
        self, rate: float, burst: int, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Takes ``cost`` tokens; returns 0 when allowed, else seconds until it would be."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            return (cost - tokens) / self.rate
        self._buckets[key] = (tokens - cost, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0

    def __len__(self) -> int:
        return len(self._buckets)
