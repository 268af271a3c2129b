"""Mergeable sums of per-unit pairs, from which ratio metrics and their variances follow.

Every outcome metric here is a ratio of two per-session totals: clicks over impressions
(CTR), converting sessions over sessions (conversion rate, the denominator being 1 per
session), revenue over sessions. Summing ``x``, ``y`` and their squares and cross product
per session keeps the estimate and its delta-method variance exact to compute, cheap to
persist and mergeable across partitions, hours and edges: two :class:`Moments` add up to
the moments of the union.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

from central.outcomes.errors import OutcomesError


@dataclass(frozen=True, slots=True)
class Moments:
    """Sums over units of a numerator ``y`` and a denominator ``x``."""

    n: int = 0
    sum_x: float = 0.0
    sum_y: float = 0.0
    sum_xx: float = 0.0
    sum_yy: float = 0.0
    sum_xy: float = 0.0

    @classmethod
    def of(cls, pairs: Iterable[tuple[float, float]]) -> Self:
        """The moments of ``(x, y)`` pairs, one pair a unit."""
        n = 0
        sx = sy = sxx = syy = sxy = 0.0
        for x, y in pairs:
            n += 1
            sx += x
            sy += y
            sxx += x * x
            syy += y * y
            sxy += x * y
        return cls(n, sx, sy, sxx, syy, sxy)

    def add(self, x: float, y: float) -> Moments:
        return Moments(
            self.n + 1,
            self.sum_x + x,
            self.sum_y + y,
            self.sum_xx + x * x,
            self.sum_yy + y * y,
            self.sum_xy + x * y,
        )

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.n + other.n,
            self.sum_x + other.sum_x,
            self.sum_y + other.sum_y,
            self.sum_xx + other.sum_xx,
            self.sum_yy + other.sum_yy,
            self.sum_xy + other.sum_xy,
        )

    @property
    def ratio(self) -> float:
        """``Σy / Σx``; NaN while the denominator is zero."""
        return self.sum_y / self.sum_x if self.sum_x > 0 else math.nan

    def ratio_variance(self) -> float:
        """The delta-method variance of :attr:`ratio` (units independent, clustered within).

        ``Var(R) ≈ (s_yy - 2R s_xy + R² s_xx) / (n · x̄²)`` with the sample (co)variances
        ``s``; NaN with fewer than two units.
        """
        if self.n < 2 or self.sum_x <= 0:
            return math.nan
        n = self.n
        mean_x = self.sum_x / n
        mean_y = self.sum_y / n
        var_x = (self.sum_xx - n * mean_x * mean_x) / (n - 1)
        var_y = (self.sum_yy - n * mean_y * mean_y) / (n - 1)
        cov = (self.sum_xy - n * mean_x * mean_y) / (n - 1)
        r = mean_y / mean_x
        spread = max(var_y - 2 * r * cov + r * r * var_x, 0.0)
        return spread / (n * mean_x * mean_x)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "sum_x": self.sum_x,
            "sum_y": self.sum_y,
            "sum_xx": self.sum_xx,
            "sum_yy": self.sum_yy,
            "sum_xy": self.sum_xy,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Moments:
        values = [raw.get(name) for name in ("sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy")]
        n = raw.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise OutcomesError("moments: n must be a non-negative integer", field="n")
        checked: list[float] = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OutcomesError("moments: sums must be numbers")
            if not math.isfinite(value):
                raise OutcomesError("moments: sums must be finite")
            checked.append(float(value))
        return cls(n, *checked)
