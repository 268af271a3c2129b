"""Off-policy estimates checked against a simulated shop whose click rates are known."""

from __future__ import annotations

import random

import pytest

from central.outcomes.errors import LoggedDataError, OutcomesError
from central.outcomes.ope import (
    LoggedAnswer,
    compare,
    doubly_robust,
    empirical_reward_model,
    estimate,
    ips,
    snips,
)
from protocol.exploration import ExplorationPolicy, explore

ITEMS = [f"item{i:03d}" for i in range(60)]
K = 10


def _click_rates(rng: random.Random) -> dict[str, float]:
    return {item: rng.uniform(0.0, 0.12) for item in ITEMS}


def _simulate(n: int, seed: int) -> tuple[list[LoggedAnswer], dict[str, float], list[str]]:
    """Answers logged by a mediocre model with exploration on its tail."""
    rng = random.Random(seed)
    rates = _click_rates(random.Random(1))
    logging_ranking = sorted(ITEMS, key=lambda item: rates[item] + rng.uniform(0, 0.08))
    logging_ranking.reverse()
    policy = ExplorationPolicy(rate=0.3, slots=4, pool=30)
    answers = []
    for index in range(n):
        shown = explore(logging_ranking, K, policy, rng)
        rewards = tuple(float(rng.random() < rates[item]) for item in shown.items)
        answers.append(LoggedAnswer(f"r{index}", shown.items, shown.propensities, rewards))
    return answers, rates, logging_ranking


def _true_value(slate: list[str], rates: dict[str, float]) -> float:
    return sum(rates[item] for item in slate)


def _slates(answers: list[LoggedAnswer], slate: list[str]) -> dict[str, list[str]]:
    return {answer.request_id: slate for answer in answers}


def test_estimates_cover_the_true_value_and_rank_two_candidates_rightly() -> None:
    answers, rates, logging_ranking = _simulate(30_000, seed=9)
    # Two candidates inside the logging policy's support: keep the fixed head, then pick
    # tail items from the exploration pool by their true rate (good) or against it (bad).
    head, pool = logging_ranking[:6], logging_ranking[6:40]
    good = head + sorted(pool, key=lambda item: -rates[item])[:4]
    bad = head + sorted(pool, key=lambda item: rates[item])[:4]
    good_slates, bad_slates = _slates(answers, good), _slates(answers, bad)
    model = empirical_reward_model(answers)
    for name, slates, slate in (("good", good_slates, good), ("bad", bad_slates, bad)):
        truth = _true_value(slate, rates)
        for interval in (
            ips(answers, slates, clip=1000),
            snips(answers, slates, clip=1000),
            doubly_robust(answers, slates, model, clip=1000),
        ):
            assert interval.covers(truth), (name, interval, truth)
    difference = compare(answers, good_slates, bad_slates, "dr", reward_model=model, clip=1000)
    assert difference.low > 0
    assert difference.covers(_true_value(good, rates) - _true_value(bad, rates))


def test_the_unexplored_ranking_is_estimated_from_its_own_explored_log() -> None:
    answers, rates, logging_ranking = _simulate(20_000, seed=2)
    unexplored = logging_ranking[:K]
    interval = snips(answers, _slates(answers, unexplored))
    assert interval.covers(_true_value(unexplored, rates))
    observed = sum(sum(answer.rewards) for answer in answers) / len(answers)
    # Exploration costs a little: the log earned less than the ranking it explores around.
    assert observed < interval.estimate


def test_malformed_logs_and_settings_are_refused() -> None:
    with pytest.raises(LoggedDataError, match="length"):
        LoggedAnswer("r1", ("a", "b"), (1.0,), (0.0, 1.0))
    with pytest.raises(LoggedDataError, match="propensity"):
        LoggedAnswer("r1", ("a",), (0.0,), (1.0,))
    with pytest.raises(LoggedDataError, match="finite"):
        LoggedAnswer("r1", ("a",), (0.5,), (float("nan"),))
    answer = LoggedAnswer("r1", ("a",), (0.5,), (1.0,))
    with pytest.raises(OutcomesError, match="no target"):
        ips([answer], {})
    with pytest.raises(OutcomesError, match="clip"):
        ips([answer], {"r1": ["a"]}, clip=0.5)
    with pytest.raises(OutcomesError, match="reward model"):
        estimate([answer], {"r1": ["a"]}, "dr")
