"""Rollout plans: validation with clear messages, encoding, and the record edges get."""

from __future__ import annotations

import pytest

from central.rollout.plan import (
    Decision,
    Guardrails,
    RolloutPlan,
    RolloutPlanError,
    parse_steps,
)


def plan(**changes: object) -> RolloutPlan:
    values: dict[str, object] = {
        "region": "eu", "version": 8, "steps": (5, 50, 100), "shadow": True, "interval_s": 60.0,
        "guardrails": Guardrails(), "previous_stable": 7,
    }  # fmt: skip
    values.update(changes)
    return RolloutPlan(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5,25,50", "last step must be 100"),
        ("50,25,100", "must increase"),
        ("0,100", "within 1..100"),
        ("five,100", "comma-separated"),
        ("", "at least one step"),
    ],
)
def test_bad_steps_are_refused_with_the_rule_they_break(text: str, message: str) -> None:
    with pytest.raises(RolloutPlanError, match=message):
        parse_steps(text)


def test_guardrails_out_of_range_are_refused() -> None:
    with pytest.raises(RolloutPlanError, match="max_error_rate"):
        Guardrails(max_error_rate=1.5)
    with pytest.raises(RolloutPlanError, match="confidence"):
        Guardrails(confidence=1.0)


def test_a_plan_round_trips_and_derives_each_steps_edge_record() -> None:
    p = plan().decided(Decision(1.0, "start", 0, 0, True, "started", {"x": 1}))
    assert RolloutPlan.decode(p.encode()) == p
    assert [(s, shadow) for s, shadow in p.stages()] == [(0, True), (5, False), (50, False),
                                                          (100, False)]  # fmt: skip
    record = p.edge_record(None)
    assert (record.stable, record.canary, record.canary_percent, record.shadow) == (7, 8, 0, True)
    second = plan(step=2).edge_record(record)
    assert (second.canary_percent, second.shadow, second.step) == (50, False, record.step + 1)
    done = plan(status="completed").edge_record(second)
    assert (done.stable, done.canary) == (8, None)
    undone = plan(status="rolled_back").edge_record(second)
    assert (undone.stable, undone.canary) == (7, None)


def test_an_unreadable_plan_is_refused() -> None:
    with pytest.raises(RolloutPlanError, match="unreadable"):
        RolloutPlan.decode(b'{"region": "eu"}')
