"""Judging a step: the figures come from a real TelemetryStore fed with reports."""

from __future__ import annotations

import pytest

from central.monitor.store import TelemetryStore
from central.rollout.guardrails import judge
from central.rollout.plan import Guardrails, RolloutPlan
from protocol.telemetry import LatencyHistogram, Refused, ShadowStats, TelemetryReport, VariantStats

T0 = 1_800_000_000.0


def histogram(value_s: float, count: int) -> LatencyHistogram:
    h = LatencyHistogram()
    for _ in range(count):
        h.observe(value_s)
    return h


def plan(**changes: object) -> RolloutPlan:
    values: dict[str, object] = {
        "region": "eu", "version": 8, "steps": (25, 100), "shadow": False, "interval_s": 60.0,
        "guardrails": Guardrails(max_p99_ms=5.0, max_error_rate=0.05, min_ctr_ratio=0.8,
                                 min_requests=50, min_impressions=100),
        "previous_stable": 7, "step_started_at": T0,
    }  # fmt: skip
    values.update(changes)
    return RolloutPlan(**values)  # type: ignore[arg-type]


def store_with(*variants: tuple[str, VariantStats], shadow: ShadowStats | None = None,
               refused: tuple[Refused, ...] = ()) -> TelemetryStore:  # fmt: skip
    store = TelemetryStore(clock=lambda: T0 + 100)
    report = TelemetryReport(
        region="eu", node="n1", seq=1, started_at_ms=1, sent_at_ms=int((T0 + 30) * 1000),
        interval_s=5.0, ready=True, stable=7, canary=8, canary_percent=25, refused=refused,
        variants=dict(variants), shadow_stats=shadow,
    )  # fmt: skip
    store.add(report, received_at=T0 + 30)
    return store


def canary(requests: int, errors: int = 0, latency_s: float = 0.001, impressions: int = 0,
           clicks: int = 0) -> tuple[str, VariantStats]:  # fmt: skip
    return "canary", VariantStats(8, requests, errors, impressions, clicks,
                                  histogram(latency_s, requests))  # fmt: skip


def stable(impressions: int = 0, clicks: int = 0) -> tuple[str, VariantStats]:
    return "stable", VariantStats(7, 300, 0, impressions, clicks, histogram(0.001, 300))


def verdict_at(store: TelemetryStore, p: RolloutPlan, now: float) -> tuple[str, str]:
    v = judge(p, store.window("eu", since=p.step_started_at, until=now), now)
    return v.action, v.reason


def test_a_healthy_step_holds_until_its_interval_then_advances() -> None:
    store = store_with(canary(80), stable())
    assert verdict_at(store, plan(), T0 + 40) == ("hold", "step in progress")
    assert verdict_at(store, plan(), T0 + 61)[0] == "advance"
    assert verdict_at(store, plan(step=1), T0 + 61)[0] == "complete"


def test_a_step_without_enough_canary_traffic_holds_past_its_interval() -> None:
    action, reason = verdict_at(store_with(canary(10), stable()), plan(), T0 + 90)
    assert action == "hold" and "10 of 50" in reason


def test_a_slow_canary_is_rolled_back() -> None:
    action, reason = verdict_at(store_with(canary(120, latency_s=0.009), stable()), plan(), T0 + 40)
    assert action == "rollback" and "p99" in reason and "5 ms" in reason


def test_a_failing_canary_is_rolled_back_once_enough_was_asked() -> None:
    assert verdict_at(store_with(canary(60, errors=10), stable()), plan(), T0 + 40)[0] == "rollback"
    few = store_with(canary(3, errors=2), stable())
    assert verdict_at(few, plan(), T0 + 40)[0] == "hold"  # 5 attempts: too few to judge


def test_a_refusal_by_any_edge_rolls_back_at_once() -> None:
    store = store_with(canary(0), stable(), refused=(Refused(8, "bad_signature", "no"),))
    action, reason = verdict_at(store, plan(), T0 + 40)
    assert action == "rollback" and "bad_signature" in reason


def test_ctr_rolls_back_only_when_confidently_below_the_ratio() -> None:
    # 0.10 vs 0.12 on 500 impressions each: a ratio of 0.83, but not surely below 0.8.
    unclear = store_with(canary(200, impressions=500, clicks=50), stable(500, 60))
    assert verdict_at(unclear, plan(), T0 + 61)[0] == "advance"
    # 0.04 vs 0.12 on 3000 impressions each: surely below 0.8.
    worse = store_with(canary(200, impressions=3000, clicks=120), stable(3000, 360))
    action, reason = verdict_at(worse, plan(), T0 + 40)
    assert action == "rollback" and "CTR" in reason


def test_the_shadow_step_is_judged_on_the_shadow_scores() -> None:
    shadow = ShadowStats(8, 90, 0, 90 * 0.6, histogram(0.0004, 90))
    p = plan(shadow=True, guardrails=Guardrails(max_p99_ms=5.0, min_requests=50))
    v = judge(p, store_with(stable(), shadow=shadow).window("eu", T0, T0 + 61), T0 + 61)
    assert v.action == "advance"
    assert v.figures["overlap_at_k"] == pytest.approx(0.6)


