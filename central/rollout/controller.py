"""The rollout controller: walks every active plan step by step from edge telemetry.

Each :meth:`RolloutController.tick` (every ``tick_s`` under
:class:`~central.rollout.service.RolloutService`) reads the plans from the KV (so a
restarted controller, or one on another machine, resumes where the last one was), judges
each active plan's current step on the region's telemetry since the step began
(:func:`~central.rollout.guardrails.judge`), and acts: advance to the next step, complete
(the bundle becomes stable), roll back (the previous stable comes back and the canary is
withdrawn), or hold. A paused plan is still judged, so a canary that hurts is rolled back
even while paused; it just does not advance.

Each action is written to the plan by compare-and-set, then to the region's rollout record
that edges watch, then to the audit stream. Holds are audited only when their reason
changes, so waiting for traffic does not flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.client import JetStreamContext

from central.monitor.store import TelemetryStore
from central.rollout.evidence import gather
from central.rollout.guardrails import Verdict, judge
from central.rollout.plan import Decision, RolloutPlan
from central.rollout.store import (
    apply_edge_record,
    audit,
    change_plan,
    read_plans,
)

log = logging.getLogger("proxima.rollout")


class RolloutController:
    """The decisions, on one JetStream context; what runs it is the service."""

    def __init__(
        self,
        js: JetStreamContext,
        telemetry: TelemetryStore,
        *,
        clock: Callable[[], float] = time.time,
        signer: Ed25519PrivateKey | None = None,
    ) -> None:
        self.js = js
        self.telemetry = telemetry
        self.clock = clock
        self.signer = signer  # signs the edge records it writes, when edges require it

    async def tick(self) -> None:
        for region, (plan, _revision) in sorted((await read_plans(self.js)).items()):
            if plan.active:
                await self._step(region, plan)

    async def _step(self, region: str, plan: RolloutPlan) -> None:
        now = self.clock()
        if now <= plan.step_started_at:  # started by a clock ahead of this one: wait for it
            return
        window = self.telemetry.window(region, since=plan.step_started_at, until=now)
        evidence = await gather(
            self.js,
            plan,
            lambda since, until: self.telemetry.window(region, since=since, until=until),
            now,
        )
        verdict = judge(plan, window, now, evidence)
        if verdict.action == "hold" or (plan.status == "paused" and verdict.action != "rollback"):
            await self._note_hold(plan, verdict, now)
            return
        updated = await change_plan(
            self.js, region, lambda current: self._decide(current, plan, verdict, now)
        )
        if updated is None:
            return
        record = await apply_edge_record(self.js, updated, self.signer)
        await audit(self.js, updated, updated.decisions[-1])
        log.info(
            "rollout of bundle %d in %s: %s (%s); edges now serve stable=%s canary=%s at %d%%%s",
            updated.version,
            region,
            verdict.action,
            verdict.reason,
            record.stable,
            record.canary,
            record.canary_percent,
            " (shadow)" if record.shadow else "",
        )

    async def _decide(
        self, current: RolloutPlan | None, judged: RolloutPlan, verdict: Verdict, now: float
    ) -> RolloutPlan | None:
        # Only act on the plan as it was judged: an operator may have changed it since.
        if current is None or not _same_step(current, judged) or not current.active:
            return None
        if verdict.action == "rollback":
            decision = _decision(now, "rollback", current, verdict)
            return current.decided(decision, status="rolled_back", reason=verdict.reason)
        if verdict.action == "complete":
            decision = _decision(now, "complete", current, verdict)
            return current.decided(decision, status="completed", reason=verdict.reason)
        advanced = replace(current, step=current.step + 1, step_started_at=now)
        return advanced.decided(_decision(now, "advance", advanced, verdict))

    async def _note_hold(self, plan: RolloutPlan, verdict: Verdict, now: float) -> None:
        last = plan.decisions[-1] if plan.decisions else None
        reason = verdict.reason if plan.status == "running" else f"paused; {verdict.reason}"
        if verdict.reason == "step in progress" or (
            last is not None and last.action == "hold" and last.reason == reason
        ):
            return

        async def record_hold(current: RolloutPlan | None) -> RolloutPlan | None:
            if current is None or not _same_step(current, plan):
                return None
            held = Verdict("hold", reason, verdict.figures)
            return current.decided(_decision(now, "hold", current, held))

        updated = await change_plan(self.js, plan.region, record_hold)
        if updated is not None:
            await audit(self.js, updated, updated.decisions[-1])


def _same_step(a: RolloutPlan, b: RolloutPlan) -> bool:
    return (a.version, a.step, a.status, a.step_started_at) == (
        b.version,
        b.step,
        b.status,
        b.step_started_at,
    )


def _decision(now: float, action: str, plan: RolloutPlan, verdict: Verdict) -> Decision:
    return Decision(
        at=now,
        action=action,
        step=plan.step,
        percent=plan.percent,
        shadow=plan.in_shadow,
        reason=verdict.reason,
        figures=verdict.figures,
    )
