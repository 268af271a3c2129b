"""Judging a rollout step from edge telemetry: advance, hold, roll back or complete.

Pure: the figures come in as a :class:`~central.monitor.store.WindowSummary` of the
region since the step began, so canary and stable are compared on the same region and
the same time window. The rules:

* any edge of the region refusing the bundle rolls it back at once;
* the canary's failure rate (answers that failed and fell back to stable, over all it was
  asked for) above ``max_error_rate`` rolls back, judged once it was asked
  ``min(min_requests, 50)`` times;
* its p99 answer time above ``max_p99_ms`` rolls back, judged once it gave
  ``min(min_requests, 100)`` answers (in the shadow step: its ranking time);
* CTR is compared as the ratio canary/stable over the step's whole persisted evidence
  (:mod:`central.rollout.evidence`) with an always-valid confidence sequence, since it is
  looked at every tick; the rollout is rolled back when the whole interval lies below
  ``min_ctr_ratio``, that is when the canary is worse than allowed with the plan's
  confidence however often it was checked, not on a raw ratio;
* a step advances when its interval has passed and the canary gave ``min_requests``
  answers; otherwise it holds. The last step completes the rollout the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from central.monitor.store import WindowSummary
from central.rollout.evidence import Evidence
from central.rollout.plan import RolloutPlan

Action = Literal["advance", "hold", "rollback", "complete"]


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def judge(
    plan: RolloutPlan, window: WindowSummary, now: float, evidence: Evidence | None = None
) -> Verdict:
    rails = plan.guardrails
    figures: dict[str, Any] = {"nodes": len(window.nodes), "window_s": round(window.span_s, 1)}
    refused = window.refusals(plan.version)
    if refused:
        node, refusal = refused[0]
        return Verdict(
            "rollback",
            f"bundle {plan.version} refused by {len(refused)} edge(s), e.g. {node}: "
            f"{refusal.message} [{refusal.code}]",
            figures | {"refused_by": sorted(n for n, _ in refused)},
        )
    if plan.in_shadow:
        shadow = window.shadow(plan.version)
        answers, failures, latency = shadow.requests - shadow.errors, shadow.errors, shadow.latency
        overlap = shadow.mean_overlap()
        figures["overlap_at_k"] = None if overlap is None else round(overlap, 4)
    else:
        canary = window.variant("canary", plan.version)
        answers, failures, latency = canary.requests, canary.errors, canary.latency
    attempts = answers + failures
    p99 = latency.quantile(0.99)
    figures |= {
        "canary_answers": answers,
        "canary_failures": failures,
        "canary_p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }
    if rails.max_error_rate is not None and attempts >= max(1, min(rails.min_requests, 50)):
        rate = failures / attempts
        figures["canary_error_rate"] = round(rate, 5)
        if rate > rails.max_error_rate:
            return Verdict(
                "rollback",
                f"canary error rate {rate:.2%} over {attempts} requests is above "
                f"the allowed {rails.max_error_rate:.2%}",
                figures,
            )
    if (
        rails.max_p99_ms is not None
        and p99 is not None
        and answers >= max(1, min(rails.min_requests, 100))
        and p99 * 1000 > rails.max_p99_ms
    ):
        return Verdict(
            "rollback",
            f"canary p99 {p99 * 1000:.2f} ms over {answers} answers is above "
            f"the allowed {rails.max_p99_ms:g} ms",
            figures,
        )
    ctr_verdict = _judge_ctr(plan, window, figures, evidence)
    if ctr_verdict is not None:
        return ctr_verdict
    if now - plan.step_started_at < plan.interval_s:
        return Verdict("hold", "step in progress", figures)
    if answers < rails.min_requests:
        return Verdict(
            "hold",
            f"waiting for traffic: {answers} of {rails.min_requests} canary answers",
            figures,
        )
    if plan.last_step:
        return Verdict("complete", "every step held its guardrails", figures)
    return Verdict("advance", "guardrails held for the whole step", figures)


def _judge_ctr(
    plan: RolloutPlan, window: WindowSummary, figures: dict[str, Any], evidence: Evidence | None
) -> Verdict | None:
    rails = plan.guardrails
    if plan.in_shadow or rails.min_ctr_ratio is None:
        return None
    step = evidence if evidence is not None else Evidence.start(plan).added(window, plan.version)
    figures |= {
        "canary_ctr": _rate(step.canary_clicks, step.canary_impressions),
        "stable_ctr": _rate(step.stable_clicks, step.stable_impressions),
        "canary_impressions": step.canary_impressions,
        "stable_impressions": step.stable_impressions,
        "evidence_s": round(step.until - step.step_started_at, 1),
    }
    if min(step.canary_impressions, step.stable_impressions) < max(rails.min_impressions, 1):
        return None  # too little to judge yet (and at 100% there is no stable to compare)
    lift = step.ctr_lift(alpha=1 - rails.confidence)
    if not math.isfinite(lift.high):
        return None
    low, ratio, high = 1 + lift.low, 1 + lift.estimate, 1 + lift.high
    figures["ctr_ratio"] = [round(low, 4), round(ratio, 4), round(high, 4)]
    if high < rails.min_ctr_ratio:
        return Verdict(
            "rollback",
            f"canary CTR is {ratio:.2f}x stable's (always-valid {rails.confidence:.0%} "
            f"interval: at most {high:.2f}x over the step's "
            f"{step.canary_impressions} canary impressions), below the allowed "
            f"{rails.min_ctr_ratio:g}x",
            figures,
        )
    return None


def _rate(clicks: int, impressions: int) -> float | None:
    return round(clicks / impressions, 5) if impressions else None
