"""The off-policy evaluation of a candidate bundle, and the gate built on it.

From the lake's logged answers (:mod:`central.outcomes.logged`) each bundle is replayed to
the slate it would have shown; clipped IPS, self-normalised IPS and doubly robust
estimates of its reward per answer follow (:mod:`central.outcomes.ope`), each with an
interval. Against a baseline bundle (the stable one) the comparison is paired, answer by
answer, and the **gate** passes when the whole interval of the difference, by the chosen
estimator, lies above ``-margin``: the candidate is not worse than the stable bundle by
more than the margin, with the interval's confidence, before any user sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from central.outcomes.errors import OutcomesError
from central.outcomes.logged import LoggedLog, Reward, read_logged, replay_slates
from central.outcomes.ope import (
    DEFAULT_CLIP,
    ESTIMATORS,
    Estimator,
    compare,
    empirical_reward_model,
    estimate,
)
from central.outcomes.stats import Interval
from protocol.serving import ServingModel


@dataclass(frozen=True, slots=True)
class GateSettings:
    estimator: Estimator = "snips"
    margin: float = 0.0  # reward per answer the candidate may lose
    confidence: float = 0.95
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise OutcomesError(
                f"estimator must be one of {', '.join(ESTIMATORS)}", field="estimator"
            )
        if not 0 <= self.margin < 1e6:
            raise OutcomesError("margin must be a non-negative number", field="margin")


@dataclass(frozen=True, slots=True)
class OffPolicyResult:
    answers: int
    logged_value: float
    candidate: dict[Estimator, Interval]
    baseline: dict[Estimator, Interval] = field(default_factory=dict)
    difference: dict[Estimator, Interval] = field(default_factory=dict)
    passed: bool | None = None
    gate: GateSettings = field(default_factory=GateSettings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "logged_value": self.logged_value,
            "candidate": {name: interval.to_dict() for name, interval in self.candidate.items()},
            "baseline": {name: interval.to_dict() for name, interval in self.baseline.items()},
            "difference": {name: interval.to_dict() for name, interval in self.difference.items()},
            "gate": {
                "estimator": self.gate.estimator,
                "margin": self.gate.margin,
                "passed": self.passed,
            },
        }


def evaluate_models(
    log: LoggedLog,
    candidate: ServingModel,
    baseline: ServingModel | None = None,
    gate: GateSettings | None = None,
) -> OffPolicyResult:
    """Every estimator for ``candidate`` (and ``baseline``) on ``log``, and the gate's verdict."""
    settings = gate or GateSettings()
    answers = log.answers
    if not answers:
        raise OutcomesError(
            "no logged answers with propensities: edges write them when answers are logged",
            field="logged",
        )
    model = empirical_reward_model(answers)
    options: dict[str, Any] = {"clip": settings.clip, "confidence": settings.confidence}
    candidate_slates = replay_slates(candidate, log)
    result_candidate = {
        name: estimate(answers, candidate_slates, name, reward_model=model, **options)
        for name in ESTIMATORS
    }
    logged_value = sum(sum(answer.rewards) for answer in answers) / len(answers)
    if baseline is None:
        return OffPolicyResult(len(answers), logged_value, result_candidate, gate=settings)
    baseline_slates = replay_slates(baseline, log)
    result_baseline = {
        name: estimate(answers, baseline_slates, name, reward_model=model, **options)
        for name in ESTIMATORS
    }
    difference = {
        name: compare(answers, candidate_slates, baseline_slates, name, reward_model=model,
                      **options)
        for name in ESTIMATORS
    }  # fmt: skip
    chosen = difference[settings.estimator]
    passed = chosen.low == chosen.low and chosen.low > -settings.margin
    return OffPolicyResult(
        len(answers), logged_value, result_candidate, result_baseline, difference, passed,
        settings,
    )  # fmt: skip


def evaluate_lake(
    files: Sequence[Path],
    candidate: ServingModel,
    baseline: ServingModel | None = None,
    gate: GateSettings | None = None,
    *,
    reward: Reward = "click",
    max_answers: int = 200_000,
) -> OffPolicyResult:
    log = read_logged(files, reward=reward, max_answers=max_answers)
    return evaluate_models(log, candidate, baseline, gate)
