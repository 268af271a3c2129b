"""The outcome report: per model version, variant and region, what each arm earned.

For every arm: CTR (attributed clicks per shown item), conversion rate and revenue per
session, each with an interval, the revenue attributed to its answers, and its lift over
the region's **holdout** (the non-personalised popularity share) and, for a canary, over
the region's **stable** version. Intervals are fixed-horizon by default (a report is read
once); ``sequential=True`` gives always-valid ones, the kind a guardrail needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from central.outcomes.attribution import ArmFigures, Attribution
from central.outcomes.moments import Moments
from central.outcomes.stats import Interval, lift_interval, lift_sequence, ratio_interval

Metric = Literal["ctr", "conversion", "revenue"]
METRICS: tuple[Metric, ...] = ("ctr", "conversion", "revenue")


@dataclass(frozen=True, slots=True)
class ArmReport:
    region: str
    bundle: int
    variant: str
    sessions: int
    figures: dict[Metric, Interval]
    attributed_revenue: float
    lift_vs_holdout: dict[Metric, Interval] = field(default_factory=dict)
    lift_vs_stable: dict[Metric, Interval] = field(default_factory=dict)
    stable_bundle: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "bundle": self.bundle,
            "variant": self.variant,
            "sessions": self.sessions,
            **{metric: self.figures[metric].to_dict() for metric in METRICS},
            "attributed_revenue": self.attributed_revenue,
            "lift_vs_holdout": {m: i.to_dict() for m, i in self.lift_vs_holdout.items()},
            "lift_vs_stable": {m: i.to_dict() for m, i in self.lift_vs_stable.items()},
            "stable_bundle": self.stable_bundle,
        }


@dataclass(frozen=True, slots=True)
class Report:
    arms: tuple[ArmReport, ...]
    anomalies: dict[str, int]
    answers: int
    events: int
    confidence: float
    sequential: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "arms": [arm.to_dict() for arm in self.arms],
            "anomalies": dict(self.anomalies),
            "answers": self.answers,
            "events": self.events,
            "confidence": self.confidence,
            "sequential": self.sequential,
        }


def _moments(figures: ArmFigures, metric: Metric) -> Moments:
    return {"ctr": figures.ctr, "conversion": figures.conversion, "revenue": figures.revenue}[
        metric
    ]


def _merged(arms: Sequence[ArmFigures], metric: Metric) -> Moments:
    total = Moments()
    for arm in arms:
        total = total + _moments(arm, metric)
    return total


def build_report(
    attribution: Attribution,
    *,
    version: int | None = None,
    region: str | None = None,
    confidence: float = 0.95,
    sequential: bool = False,
) -> Report:
    """The report of ``attribution``, limited to one bundle version and/or region."""

    def lift(treatment: Moments, control: Moments) -> Interval:
        if sequential:
            return lift_sequence(treatment, control, alpha=1 - confidence)
        return lift_interval(treatment, control, confidence)

    reports = []
    for figures in attribution.arms:
        arm = figures.arm
        if (version is not None and arm.bundle != version) or (
            region is not None and arm.region != region
        ):
            continue
        same_region = [other for other in attribution.arms if other.arm.region == arm.region]
        holdout = [other for other in same_region if other.arm.variant == "holdout"]
        stable = [other for other in same_region if other.arm.variant == "stable"]
        lift_holdout: dict[Metric, Interval] = {}
        lift_stable: dict[Metric, Interval] = {}
        stable_bundle = None
        if holdout and arm.variant != "holdout":
            for metric in METRICS:
                lift_holdout[metric] = lift(_moments(figures, metric), _merged(holdout, metric))
        if stable and arm.variant == "canary":
            main = max(stable, key=lambda other: other.ctr.n)
            stable_bundle = main.arm.bundle
            for metric in METRICS:
                lift_stable[metric] = lift(_moments(figures, metric), _moments(main, metric))
        reports.append(
            ArmReport(
                region=arm.region,
                bundle=arm.bundle,
                variant=arm.variant,
                sessions=figures.ctr.n,
                figures={m: ratio_interval(_moments(figures, m), confidence) for m in METRICS},
                attributed_revenue=figures.attributed_revenue,
                lift_vs_holdout=lift_holdout,
                lift_vs_stable=lift_stable,
                stable_bundle=stable_bundle,
            )
        )
    return Report(
        tuple(reports),
        dict(attribution.anomalies),
        attribution.answers,
        attribution.events,
        confidence,
        sequential,
    )
