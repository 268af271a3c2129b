from __future__ import annotations

import math

import numpy as np
import pytest

from central.outcomes.errors import OutcomesError
from central.outcomes.moments import Moments
from central.outcomes.stats import lift_interval, lift_sequence, ratio_interval


def _sessions(rng: np.random.Generator, n: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    impressions = rng.integers(1, 12, size=n).astype(float)
    clicks = rng.binomial(impressions.astype(int), ctr).astype(float)
    return impressions, clicks


def _moments(x: np.ndarray, y: np.ndarray) -> Moments:
    return Moments(
        len(x),
        float(x.sum()),
        float(y.sum()),
        float((x * x).sum()),
        float((y * y).sum()),
        float((x * y).sum()),
    )


def test_the_fixed_interval_covers_the_true_lift_at_its_level() -> None:
    rng = np.random.default_rng(11)
    true_lift = 0.2
    trials = 400
    covered = 0
    for _ in range(trials):
        treatment = _moments(*_sessions(rng, 3000, 0.06 * (1 + true_lift)))
        control = _moments(*_sessions(rng, 3000, 0.06))
        covered += lift_interval(treatment, control).covers(true_lift)
    assert 0.91 <= covered / trials <= 0.99


def test_checking_every_tick_breaks_the_fixed_interval_but_not_the_sequence() -> None:
    rng = np.random.default_rng(5)
    looks = np.arange(200, 6001, 200)
    streams = 200
    fixed_alarms = sequence_alarms = 0
    for _ in range(streams):
        xt, yt = _sessions(rng, looks[-1], 0.05)
        xc, yc = _sessions(rng, looks[-1], 0.05)
        fixed_alarm = sequence_alarm = False
        for n in looks:
            treatment, control = _moments(xt[:n], yt[:n]), _moments(xc[:n], yc[:n])
            fixed_alarm |= not lift_interval(treatment, control).covers(0.0)
            sequence_alarm |= not lift_sequence(treatment, control, alpha=0.05).covers(0.0)
        fixed_alarms += fixed_alarm
        sequence_alarms += sequence_alarm
    # No true difference: every alarm is a false one. Peeking 30 times at a 95 % interval
    # alarms far more often than 5 %; the always-valid sequence stays within its level.
    assert sequence_alarms / streams <= 0.06
    assert fixed_alarms / streams > 0.12
    assert fixed_alarms > 2 * sequence_alarms


def test_the_sequence_still_finds_a_real_lift() -> None:
    rng = np.random.default_rng(3)
    treatment = _moments(*_sessions(rng, 40_000, 0.06))
    control = _moments(*_sessions(rng, 40_000, 0.05))
    interval = lift_sequence(treatment, control)
    assert interval.low > 0
    assert interval.covers(0.2)


def test_ratio_interval_and_empty_arms() -> None:
    moments = Moments.of([(1.0, 1.0), (1.0, 0.0), (1.0, 1.0), (1.0, 0.0)])
    interval = ratio_interval(moments)
    assert interval.estimate == pytest.approx(0.5)
    assert interval.low < 0.5 < interval.high
    nothing = lift_interval(Moments(), moments)
    assert math.isnan(nothing.estimate)
    assert nothing.to_dict() == {"estimate": None, "low": None, "high": None}


def test_out_of_range_levels_are_refused() -> None:
    moments = Moments.of([(1.0, 1.0), (1.0, 0.0)])
    with pytest.raises(OutcomesError, match="confidence"):
        ratio_interval(moments, confidence=1.0)
    with pytest.raises(OutcomesError, match="alpha"):
        lift_sequence(moments, moments, alpha=0.0)
    with pytest.raises(OutcomesError, match="mixing"):
        lift_sequence(moments, moments, mixing_sd=math.nan)
