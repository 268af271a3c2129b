"""Intervals for outcome metrics and the lift of one arm over another.

Two kinds of interval:

* **fixed-horizon** (:func:`ratio_interval`, :func:`lift_interval`): the usual normal
  interval, valid when the figure is looked at once, as in a report;
* **always valid** (:func:`lift_sequence`): a confidence *sequence* that holds at every
  look at once, so a guardrail that checks each tick and stops at the first bad reading
  keeps its error rate. It is the normal-mixture boundary of Robbins, in the information
  time of the estimate: for an estimate with variance ``V`` and a mixing variance ``τ²``
  (the size of effect the test is tuned for), the true value lies within
  ``sqrt(V (V + τ²) / τ² · (2 ln(1/alpha) + ln(1 + τ²/V)))`` of the estimate at every ``V``
  with probability at least ``1 - alpha`` (Ville's inequality on the mixture martingale;
  asymptotically, as ``V`` is estimated from the data).

Lift is relative: ``treatment / control - 1``, estimated on the log scale (the ratio of
two independent ratio metrics, each with its delta-method variance) and mapped back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from central.outcomes.errors import OutcomesError
from central.outcomes.moments import Moments

DEFAULT_MIXING_SD = 0.1  # tuned for relative lifts of about ±10 %


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": _finite(self.estimate),
            "low": _finite(self.low),
            "high": _finite(self.high),
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _z(confidence: float) -> float:
    if not 0.5 <= confidence < 1:
        raise OutcomesError("confidence must be in [0.5, 1)", field="confidence")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def ratio_interval(moments: Moments, confidence: float = 0.95) -> Interval:
    """The metric ``Σy/Σx`` with its delta-method normal interval."""
    z = _z(confidence)
    estimate = moments.ratio
    variance = moments.ratio_variance()
    if not math.isfinite(variance):
        return Interval(estimate, math.nan, math.nan)
    half = z * math.sqrt(variance)
    return Interval(estimate, estimate - half, estimate + half)


def _log_ratio(treatment: Moments, control: Moments) -> tuple[float, float]:
    """``ln(R_t / R_c)`` and its variance; NaN when either arm has nothing to compare."""
    rt, rc = treatment.ratio, control.ratio
    vt, vc = treatment.ratio_variance(), control.ratio_variance()
    if not (rt > 0 and rc > 0 and math.isfinite(vt) and math.isfinite(vc)):
        return math.nan, math.nan
    return math.log(rt / rc), vt / (rt * rt) + vc / (rc * rc)


def lift_interval(treatment: Moments, control: Moments, confidence: float = 0.95) -> Interval:
    """Relative lift of ``treatment`` over ``control`` with a fixed-horizon interval."""
    z = _z(confidence)
    log_ratio, variance = _log_ratio(treatment, control)
    if not math.isfinite(variance):
        return Interval(math.nan, math.nan, math.nan)
    half = z * math.sqrt(variance)
    return Interval(
        math.exp(log_ratio) - 1, math.exp(log_ratio - half) - 1, math.exp(log_ratio + half) - 1
    )


def mixture_half_width(variance: float, alpha: float, mixing_sd: float) -> float:
    """The half-width of the normal-mixture confidence sequence at estimate variance ``V``."""
    if not 0 < alpha < 1:
        raise OutcomesError("alpha must be in (0, 1)", field="alpha")
    if not (math.isfinite(mixing_sd) and mixing_sd > 0):
        raise OutcomesError("the mixing sd must be a positive number", field="mixing_sd")
    if not math.isfinite(variance) or variance <= 0:
        return math.inf
    tau2 = mixing_sd * mixing_sd
    spread = variance * (variance + tau2) / tau2
    return math.sqrt(spread * (2 * math.log(1 / alpha) + math.log1p(tau2 / variance)))


def lift_sequence(
    treatment: Moments,
    control: Moments,
    alpha: float = 0.05,
    mixing_sd: float = DEFAULT_MIXING_SD,
) -> Interval:
    """Relative lift with an always-valid interval: safe to check after every new unit."""
    log_ratio, variance = _log_ratio(treatment, control)
    if not math.isfinite(variance):
        return Interval(math.nan, math.nan, math.nan)
    half = mixture_half_width(variance, alpha, mixing_sd)
    return Interval(
        math.exp(log_ratio) - 1, math.exp(log_ratio - half) - 1, math.exp(log_ratio + half) - 1
    )
