"""A rollout step's evidence, kept for the whole step and judged with an always-valid test.

The latency monitor keeps minutes of telemetry; a canary step may last hours. So every
controller tick adds what the region's edges reported since the last tick to the step's
:class:`Evidence` — canary and stable clicks and impressions, canary answers and failures
— and writes it to the ``proxima-rollout-evidence`` KV (one key a region, compare-and-set),
so a restarted controller, or one on another machine, goes on from the same figures.
Reports are added up to ``LAG_S`` before now, so a report still on its way is not missed.

Because the evidence is judged at every tick, CTR is compared with a confidence
*sequence* (:func:`central.outcomes.stats.lift_sequence`): its error rate holds however
often it is looked at, where a fixed interval checked each tick would roll back a
healthy canary far more often than its confidence says.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from central.monitor.window import WindowSummary
from central.outcomes.moments import Moments
from central.outcomes.stats import Interval, lift_sequence
from central.rollout.plan import RolloutPlan, RolloutPlanError
from protocol.subjects import check_token

EVIDENCE_BUCKET: Final = "proxima-rollout-evidence"
LAG_S: Final = 10.0  # two telemetry intervals: reports sent before this are in


@dataclass(frozen=True, slots=True)
class Evidence:
    version: int
    step: int
    step_started_at: float
    until: float  # reports sent up to this time are counted
    canary_clicks: int = 0
    canary_impressions: int = 0
    stable_clicks: int = 0
    stable_impressions: int = 0
    canary_requests: int = 0
    canary_errors: int = 0

    @classmethod
    def start(cls, plan: RolloutPlan) -> Evidence:
        return cls(plan.version, plan.step, plan.step_started_at, plan.step_started_at)

    def belongs_to(self, plan: RolloutPlan) -> bool:
        return (self.version, self.step, self.step_started_at) == (
            plan.version,
            plan.step,
            plan.step_started_at,
        )

    def added(self, window: WindowSummary, version: int) -> Evidence:
        canary = window.variant("canary", version)
        stable = window.variant("stable")
        return replace(
            self,
            until=window.until,
            canary_clicks=self.canary_clicks + canary.clicks,
            canary_impressions=self.canary_impressions + canary.impressions,
            stable_clicks=self.stable_clicks + stable.clicks,
            stable_impressions=self.stable_impressions + stable.impressions,
            canary_requests=self.canary_requests + canary.requests,
            canary_errors=self.canary_errors + canary.errors,
        )

    def ctr_lift(self, alpha: float, mixing_sd: float = 0.1) -> Interval:
        """Canary CTR over stable's, minus one, as an always-valid interval."""
        return lift_sequence(
            _binomial(self.canary_clicks, self.canary_impressions),
            _binomial(self.stable_clicks, self.stable_impressions),
            alpha=alpha,
            mixing_sd=mixing_sd,
        )

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        try:
            raw = json.loads(data)
            evidence = cls(**raw)
        except (ValueError, TypeError) as exc:
            raise RolloutPlanError(f"unreadable rollout evidence: {exc}") from exc
        numbers = asdict(evidence).values()
        if not all(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            for value in numbers
        ):
            raise RolloutPlanError("rollout evidence holds a value that is not a number")
        return evidence


def _binomial(successes: int, trials: int) -> Moments:
    """Impressions as units: ``x`` = 1 each, ``y`` = 1 for the clicked ones."""
    clicks = min(max(successes, 0), trials)
    return Moments(
        trials, float(trials), float(clicks), float(trials), float(clicks), float(clicks)
    )


async def evidence_kv(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(EVIDENCE_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=EVIDENCE_BUCKET, history=5)


async def gather(js: JetStreamContext, plan: RolloutPlan, window_for: Any, now: float) -> Evidence:
    """The step's evidence with what was reported since the last tick, saved.

    ``window_for(since, until)`` returns the region's :class:`WindowSummary`.
    """
    kv = await evidence_kv(js)
    key = check_token(plan.region, "region")
    for _ in range(5):
        try:
            entry = await kv.get(key)
            stored = Evidence.decode(entry.value) if entry.value else None
            revision = entry.revision or 0
        except KeyNotFoundError:
            stored, revision = None, 0
        evidence = (
            stored if stored is not None and stored.belongs_to(plan) else Evidence.start(plan)
        )
        until = now - LAG_S
        if until <= evidence.until:
            return evidence
        updated = evidence.added(window_for(evidence.until, until), plan.version)
        try:
            if revision:
                await kv.update(key, updated.encode(), last=revision)
            else:
                await kv.create(key, updated.encode())
        except KeyWrongLastSequenceError:
            continue  # another controller saved first: read its figures and add to them
        return updated
    raise RolloutPlanError(f"the rollout evidence of {plan.region} kept changing")
