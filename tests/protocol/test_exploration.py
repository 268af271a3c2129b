from __future__ import annotations

import random
from collections import Counter

import pytest

from protocol.exploration import ExplorationError, ExplorationPolicy, explore, pool_inclusion

RANKED = [f"item{i:02d}" for i in range(40)]


def test_without_exploration_the_answer_is_the_ranking() -> None:
    answer = explore(RANKED, 10, ExplorationPolicy(rate=0.0), random.Random(1))
    assert answer.items == tuple(RANKED[:10])
    assert answer.propensities == (1.0,) * 10
    assert not any(answer.explored)


def test_logged_propensities_are_the_frequencies_items_are_shown_with() -> None:
    policy = ExplorationPolicy(rate=0.2, slots=3, pool=8)
    rng = random.Random(42)
    draws = 40_000
    shown: Counter[str] = Counter()
    claimed: dict[str, set[float]] = {}
    for _ in range(draws):
        answer = explore(RANKED, 10, policy, rng)
        assert answer.items[:7] == tuple(RANKED[:7])
        assert len(set(answer.items)) == 10
        for item, propensity in zip(answer.items, answer.propensities, strict=True):
            shown[item] += 1
            claimed.setdefault(item, set()).add(propensity)
    for item, propensities in claimed.items():
        assert len(propensities) == 1, item
        (propensity,) = propensities
        assert shown[item] / draws == pytest.approx(propensity, abs=0.01), item
    assert claimed["item07"] == {0.8}
    assert claimed["item10"].pop() == pytest.approx(3 * 0.2 / 8)
    assert "item18" not in shown


def test_a_pool_smaller_than_the_slots_is_still_exact() -> None:
    assert pool_inclusion(3, 0.5, 1) == pytest.approx(1 - 0.5**3)
    policy = ExplorationPolicy(rate=0.5, slots=3, pool=1)
    rng = random.Random(3)
    hits = sum("item10" in explore(RANKED, 10, policy, rng).items for _ in range(20_000))
    assert hits / 20_000 == pytest.approx(pool_inclusion(3, 0.5, 1), abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0.9}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"slots": 0}, "slots"),
        ({"pool": 0}, "pool"),
    ],
)
def test_out_of_range_policies_are_refused(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ExplorationError) as caught:
        ExplorationPolicy(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
