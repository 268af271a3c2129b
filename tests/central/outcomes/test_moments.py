from __future__ import annotations

import math

import numpy as np
import pytest

from central.outcomes.errors import OutcomesError
from central.outcomes.moments import Moments


def test_ratio_and_delta_variance_match_a_direct_computation() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(1, 30, size=500).astype(float)
    y = rng.binomial(x.astype(int), 0.1).astype(float)
    moments = Moments.of(zip(x.tolist(), y.tolist(), strict=True))
    ratio = y.sum() / x.sum()
    assert moments.ratio == pytest.approx(ratio)
    residual = y - ratio * x
    direct = residual.var(ddof=1) / (len(x) * x.mean() ** 2)
    assert moments.ratio_variance() == pytest.approx(direct, rel=1e-9)


def test_moments_of_parts_add_up_to_the_moments_of_the_whole() -> None:
    pairs = [(1.0, 0.0), (3.0, 1.0), (2.0, 2.0), (5.0, 0.0), (1.0, 1.0)]
    whole = Moments.of(pairs)
    parts = Moments.of(pairs[:2]) + Moments.of(pairs[2:])
    assert parts == whole
    stepped = Moments()
    for x, y in pairs:
        stepped = stepped.add(x, y)
    assert stepped == whole


def test_a_ratio_without_units_is_not_a_number() -> None:
    assert math.isnan(Moments().ratio)
    assert math.isnan(Moments.of([(1.0, 1.0)]).ratio_variance())


def test_round_trip_and_refusals() -> None:
    moments = Moments.of([(1.0, 0.5), (2.0, 1.5)])
    assert Moments.from_dict(moments.to_dict()) == moments
    with pytest.raises(OutcomesError, match="non-negative"):
        Moments.from_dict({**moments.to_dict(), "n": -1})
    with pytest.raises(OutcomesError, match="finite"):
        Moments.from_dict({**moments.to_dict(), "sum_y": math.inf})
    with pytest.raises(OutcomesError, match="numbers"):
        Moments.from_dict({**moments.to_dict(), "sum_x": "3"})
