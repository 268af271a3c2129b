"""Off-policy estimates of a candidate ranking from logged answers and their propensities.

A logged answer is what the edge showed (``shown``, in order), the probability the
logging policy had of showing each of those items in that answer (``propensities``, from
the exploration policy of :mod:`protocol.exploration`), and what each shown item earned
(``rewards``: a click, or a purchase's value). A target policy is summarised, per answer,
by the slate it would have shown instead.

The estimators assume the *item-inclusion* model: what an item earns depends on the item
and the session, not on its position in the slate or on its neighbours. Under it an
item's reward can be reweighted by ``1 / P(shown)`` wherever the target shows it:

* :func:`ips` — inverse propensity scoring with the weights clipped at ``clip``
  (clipping trades a little bias for much less variance);
* :func:`snips` — self-normalised IPS: the same sum over the sum of the weights, scaled
  back to a slate, which removes most of the variance a few tiny propensities bring;
* :func:`doubly_robust` — a reward model's prediction for every item the target shows,
  corrected by the reweighted residuals of the items actually shown: unbiased when either
  the propensities or the model are right.

Each returns an :class:`~central.outcomes.stats.Interval` of the expected reward per
answer; :func:`compare` gives the paired difference of two targets on the same log, which
is far tighter than two separate intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from central.outcomes.errors import LoggedDataError, OutcomesError
from central.outcomes.moments import Moments
from central.outcomes.stats import Interval, ratio_interval

Estimator = Literal["ips", "snips", "dr"]
ESTIMATORS: tuple[Estimator, ...] = ("ips", "snips", "dr")
DEFAULT_CLIP = 20.0

RewardModel = Callable[[str], float]


@dataclass(frozen=True, slots=True)
class LoggedAnswer:
    request_id: str
    shown: tuple[str, ...]
    propensities: tuple[float, ...]
    rewards: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.shown) == len(self.propensities) == len(self.rewards)):
            raise LoggedDataError(
                f"answer {self.request_id}: shown, propensities and rewards differ in length"
            )
        for propensity in self.propensities:
            if not (math.isfinite(propensity) and 0 < propensity <= 1):
                raise LoggedDataError(
                    f"answer {self.request_id}: propensity {propensity!r} is not in (0, 1]",
                    field="propensities",
                )
        for reward in self.rewards:
            if not math.isfinite(reward):
                raise LoggedDataError(
                    f"answer {self.request_id}: reward {reward!r} is not finite", field="rewards"
                )


def _check_clip(clip: float) -> None:
    if not (math.isfinite(clip) and clip >= 1):
        raise OutcomesError("clip must be a finite number ≥ 1", field="clip")


def _weights(answer: LoggedAnswer, target: frozenset[str], clip: float) -> list[float]:
    return [
        min(1.0 / propensity, clip) if item in target else 0.0
        for item, propensity in zip(answer.shown, answer.propensities, strict=True)
    ]


def _targets(
    answers: Sequence[LoggedAnswer], targets: Mapping[str, Sequence[str]]
) -> list[tuple[LoggedAnswer, tuple[str, ...]]]:
    pairs = []
    for answer in answers:
        target = targets.get(answer.request_id)
        if target is None:
            raise OutcomesError(f"no target slate for answer {answer.request_id}")
        pairs.append((answer, tuple(target)))
    return pairs


def answer_values(
    answers: Sequence[LoggedAnswer],
    targets: Mapping[str, Sequence[str]],
    estimator: Estimator,
    *,
    clip: float = DEFAULT_CLIP,
    reward_model: RewardModel | None = None,
) -> list[tuple[float, float]]:
    """Per answer, the ``(x, y)`` pair whose ratio of sums is the estimate."""
    _check_clip(clip)
    if estimator == "dr" and reward_model is None:
        raise OutcomesError("the doubly robust estimate needs a reward model", field="estimator")
    pairs: list[tuple[float, float]] = []
    for answer, target in _targets(answers, targets):
        chosen = frozenset(target)
        weights = _weights(answer, chosen, clip)
        weighted = sum(w * r for w, r in zip(weights, answer.rewards, strict=True))
        if estimator == "ips":
            pairs.append((1.0, weighted))
        elif estimator == "snips":
            # E[Σ w] over the logging policy is the size of the target slate (unclipped).
            pairs.append((sum(weights) / max(len(chosen), 1), weighted))
        else:
            assert reward_model is not None
            direct = sum(reward_model(item) for item in chosen)
            residual = sum(
                w * (r - reward_model(item))
                for w, r, item in zip(weights, answer.rewards, answer.shown, strict=True)
            )
            pairs.append((1.0, direct + residual))
    return pairs


def estimate(
    answers: Sequence[LoggedAnswer],
    targets: Mapping[str, Sequence[str]],
    estimator: Estimator = "snips",
    *,
    clip: float = DEFAULT_CLIP,
    reward_model: RewardModel | None = None,
    confidence: float = 0.95,
) -> Interval:
    """The target's expected reward per answer, with a normal interval."""
    values = answer_values(answers, targets, estimator, clip=clip, reward_model=reward_model)
    return ratio_interval(Moments.of(values), confidence)


def ips(
    answers: Sequence[LoggedAnswer],
    targets: Mapping[str, Sequence[str]],
    *,
    clip: float = DEFAULT_CLIP,
    confidence: float = 0.95,
) -> Interval:
    return estimate(answers, targets, "ips", clip=clip, confidence=confidence)


def snips(
    answers: Sequence[LoggedAnswer],
    targets: Mapping[str, Sequence[str]],
    *,
    clip: float = DEFAULT_CLIP,
    confidence: float = 0.95,
) -> Interval:
    return estimate(answers, targets, "snips", clip=clip, confidence=confidence)


def doubly_robust(
    answers: Sequence[LoggedAnswer],
    targets: Mapping[str, Sequence[str]],
    reward_model: RewardModel,
    *,
    clip: float = DEFAULT_CLIP,
    confidence: float = 0.95,
) -> Interval:
    return estimate(
        answers, targets, "dr", clip=clip, reward_model=reward_model, confidence=confidence
    )


def compare(
    answers: Sequence[LoggedAnswer],
    candidate: Mapping[str, Sequence[str]],
    baseline: Mapping[str, Sequence[str]],
    estimator: Estimator = "ips",
    *,
    clip: float = DEFAULT_CLIP,
    reward_model: RewardModel | None = None,
    confidence: float = 0.95,
) -> Interval:
    """Candidate minus baseline, per answer, paired on the same logged answers.

    Self-normalised values are ratios and do not pair per answer, so ``snips`` is compared
    through its numerator with each side's own normaliser folded in.
    """
    left = answer_values(answers, candidate, estimator, clip=clip, reward_model=reward_model)
    right = answer_values(answers, baseline, estimator, clip=clip, reward_model=reward_model)
    if estimator == "snips":
        norm_left = sum(x for x, _ in left) / max(len(left), 1)
        norm_right = sum(x for x, _ in right) / max(len(right), 1)
        if norm_left <= 0 or norm_right <= 0:
            return Interval(math.nan, math.nan, math.nan)
        differences = [
            (1.0, yl / norm_left - yr / norm_right)
            for (_, yl), (_, yr) in zip(left, right, strict=True)
        ]
    else:
        differences = [(1.0, yl - yr) for (_, yl), (_, yr) in zip(left, right, strict=True)]
    return ratio_interval(Moments.of(differences), confidence)


def empirical_reward_model(
    answers: Sequence[LoggedAnswer], prior_weight: float = 20.0
) -> RewardModel:
    """Each item's mean reward where it was shown, shrunk towards the overall mean."""
    totals: dict[str, list[float]] = {}
    grand_sum = 0.0
    grand_n = 0
    for answer in answers:
        for item, reward in zip(answer.shown, answer.rewards, strict=True):
            entry = totals.setdefault(item, [0.0, 0.0])
            entry[0] += reward
            entry[1] += 1
            grand_sum += reward
            grand_n += 1
    prior = grand_sum / grand_n if grand_n else 0.0
    means = {
        item: (total + prior_weight * prior) / (count + prior_weight)
        for item, (total, count) in totals.items()
    }
    return lambda item: means.get(item, prior)
