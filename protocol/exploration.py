"""The exploration policy for a ranked answer, and the propensity of every item it shows.

A ranked list cannot be judged off-policy unless the logging policy sometimes shows what
it would not have: the item-inclusion estimators of :mod:`central.outcomes.ope` reweight
an item's reward by ``1 / P(shown)``, so every item a candidate model might show needs a
non-zero chance. The policy here keeps the head of the answer fixed and explores only its
tail, where a swap costs least:

* the first ``k - slots`` positions show the model's ranking unchanged (propensity 1);
* each of the last ``slots`` positions, independently with probability ``rate``, shows an
  item drawn without replacement, uniformly, from the ``pool`` items ranked just below
  the answer, instead of the model's own item at that position.

So an item the model put in an exploring position is shown with probability
``1 - rate``, and each pool item with ``E[min(X, pool)] / pool`` for the number ``X`` of
exploring positions (``slots · rate / pool`` when the pool is the larger); these are
exact, not estimated. The
draw takes its randomness from the caller, so a seeded generator replays an answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import ProtocolError


class ExplorationError(ProtocolError):
    code = "bad_exploration"
    status = 400


@dataclass(frozen=True, slots=True)
class ExplorationPolicy:
    rate: float = 0.0
    slots: int = 2
    pool: int = 20

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and 0 <= self.rate <= 0.5):
            raise ExplorationError("exploration rate must be in [0, 0.5]", field="rate")
        if not 1 <= self.slots <= 10:
            raise ExplorationError("exploration slots must be 1..10", field="slots")
        if not 1 <= self.pool <= 500:
            raise ExplorationError("exploration pool must be 1..500", field="pool")

    @property
    def enabled(self) -> bool:
        return self.rate > 0


@dataclass(frozen=True, slots=True)
class ExploredAnswer:
    items: tuple[str, ...]
    propensities: tuple[float, ...]
    explored: tuple[bool, ...]


def pool_inclusion(slots: int, rate: float, pool: int) -> float:
    """P(a given pool item is shown): ``E[min(X, pool)] / pool`` for ``X ~ Bin(slots, rate)``."""
    expected = sum(
        math.comb(slots, x) * rate**x * (1 - rate) ** (slots - x) * min(x, pool)
        for x in range(slots + 1)
    )
    return expected / pool


def explore(
    ranked: Sequence[str], k: int, policy: ExplorationPolicy, rng: random.Random
) -> ExploredAnswer:
    """The ``k`` items to show from ``ranked`` (best first, longer than ``k`` to explore)."""
    head = list(ranked[:k])
    pool = list(ranked[k : k + policy.pool])
    slots = min(policy.slots, len(head))
    if not policy.enabled or not pool or slots == 0:
        return ExploredAnswer(tuple(head), (1.0,) * len(head), (False,) * len(head))
    fixed = len(head) - slots
    exploring = [position for position in range(fixed, len(head)) if rng.random() < policy.rate]
    drawn = rng.sample(pool, min(len(exploring), len(pool)))
    items = list(head)
    explored = [False] * len(head)
    for position, item in zip(exploring, drawn, strict=False):
        items[position] = item
        explored[position] = True
    pool_propensity = pool_inclusion(slots, policy.rate, len(pool))
    propensities = [
        1.0 if position < fixed else (pool_propensity if explored[position] else 1.0 - policy.rate)
        for position in range(len(head))
    ]
    return ExploredAnswer(tuple(items), tuple(propensities), tuple(explored))
