"""A step's evidence outlives the monitor's window, survives a restart, and is judged with
an always-valid interval."""

from __future__ import annotations

import dataclasses

import pytest
from nats.js.client import JetStreamContext

from central.monitor.store import TelemetryStore
from central.rollout.evidence import LAG_S, Evidence, evidence_kv, gather
from central.rollout.guardrails import judge
from central.rollout.plan import RolloutPlanError
from protocol.telemetry import TelemetryReport, VariantStats
from tests.central.rollout.test_guardrails import T0, histogram, plan


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def report(
    seq: int, at: float, canary: tuple[int, int], stable: tuple[int, int]
) -> TelemetryReport:
    return TelemetryReport(
        region="eu", node="n1", seq=seq, started_at_ms=1, sent_at_ms=int(at * 1000),
        interval_s=5.0, ready=True, stable=7, canary=8, canary_percent=25,
        variants={
            "canary": VariantStats(8, 50, 0, canary[0], canary[1], histogram(0.001, 50)),
            "stable": VariantStats(7, 150, 0, stable[0], stable[1], histogram(0.001, 150)),
        },
    )  # fmt: skip


async def test_evidence_adds_up_every_tick_and_outlives_the_monitor(js: JetStreamContext) -> None:
    clock = Clock(T0)
    store = TelemetryStore(clock=clock, retention_s=60.0)
    step = plan()

    def window_for(since: float, until: float):  # type: ignore[no-untyped-def]
        return store.window("eu", since=since, until=until)

    totals = Evidence.start(step)
    for tick in range(1, 13):  # two minutes of reports, every 10 s; the store keeps one
        clock.now = T0 + tick * 10
        store.add(report(tick, clock.now - 5, (400, 40), (400, 48)), received_at=clock.now - 5)
        totals = await gather(js, step, window_for, clock.now + LAG_S)
    assert (totals.canary_impressions, totals.canary_clicks) == (12 * 400, 12 * 40)
    assert (totals.stable_impressions, totals.stable_clicks) == (12 * 400, 12 * 48)
    # The monitor itself has forgotten most of it by now.
    recent = store.window("eu", since=T0, until=clock.now)
    assert recent.variant("canary").impressions < totals.canary_impressions
    # A second look at the same moment adds nothing (another controller, or a restart).
    again = await gather(js, step, window_for, clock.now + LAG_S)
    assert again == totals
    # A new step starts from nothing.
    advanced = dataclasses.replace(step, step=1, step_started_at=clock.now)
    fresh = await gather(js, advanced, window_for, clock.now + LAG_S + 1)
    assert fresh.canary_impressions == 0 and fresh.step == 1


def test_the_whole_step_decides_where_the_window_alone_could_not() -> None:
    step = plan()
    store = TelemetryStore(clock=lambda: T0 + 100)
    store.add(report(1, T0 + 30, (150, 10), (150, 15)), received_at=T0 + 30)
    window = store.window("eu", since=T0, until=T0 + 40)
    assert judge(step, window, T0 + 40).action == "hold"  # a few minutes say too little
    evidence = dataclasses.replace(
        Evidence.start(step), until=T0 + 6 * 3600, canary_impressions=60_000,
        canary_clicks=3_000, stable_impressions=60_000, stable_clicks=4_200,
    )  # fmt: skip
    verdict = judge(step, window, T0 + 40, evidence)
    assert verdict.action == "rollback"
    assert "always-valid" in verdict.reason
    assert verdict.figures["evidence_s"] == 6 * 3600
    low, ratio, high = verdict.figures["ctr_ratio"]
    assert ratio == pytest.approx(3000 / 4200, abs=1e-3)
    assert low < ratio < high < 0.8


def test_the_sequential_interval_is_wider_than_a_one_look_interval() -> None:
    evidence = dataclasses.replace(
        Evidence.start(plan()), canary_impressions=10_000, canary_clicks=1_000,
        stable_impressions=10_000, stable_clicks=1_000,
    )  # fmt: skip
    lift = evidence.ctr_lift(alpha=0.05)
    assert lift.low < 0 < lift.high
    assert lift.high - lift.low > 2 * 1.96 * (2 * 0.9 / 1000) ** 0.5


async def test_unreadable_evidence_is_refused(js: JetStreamContext) -> None:
    kv = await evidence_kv(js)
    await kv.put("eu", b'{"version": "eight"}')
    with pytest.raises(RolloutPlanError, match="evidence"):
        await gather(js, plan(), lambda since, until: None, T0 + 100)
    with pytest.raises(RolloutPlanError, match="not a number"):
        Evidence.decode(Evidence.start(plan()).encode().replace(b'"step": 0', b'"step": NaN'))
