"""A staged rollout of one bundle in one region: steps, guardrails, progress and decisions.

Plans live in the KV bucket ``proxima-rollout-plans`` under the region's key, so the
controller that walks them can be restarted anywhere and pick up where it was. The
edges never read plans: they read the region's :class:`~protocol.rollout.RolloutState`,
which the controller derives from the plan at each step (:meth:`RolloutPlan.edge_record`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal

from central.errors import CentralError
from central.rollout.operator import label
from protocol.rollout import RolloutState, now_iso

PlanStatus = Literal["running", "paused", "completed", "rolled_back", "aborted"]
ACTIVE: Final = ("running", "paused")
SHADOW_STEP: Final = 0  # a step of 0% with shadow scoring
MAX_DECISIONS: Final = 100  # kept in the plan; the audit stream keeps them all


class RolloutPlanError(CentralError):
    """A rollout plan or its arguments break a rule; the message names it."""

    code = "bad_rollout_plan"


@dataclass(frozen=True, slots=True)
class Guardrails:
    max_p99_ms: float | None = None  # the canary's p99 answer time must stay at or under this
    max_error_rate: float | None = 0.01  # failed canary answers / canary answers
    min_ctr_ratio: float | None = None  # canary CTR / stable CTR, at the confidence below
    confidence: float = 0.95
    min_requests: int = 100  # canary answers a step needs before it may advance
    min_impressions: int = 200  # per variant, before CTR is judged

    def __post_init__(self) -> None:
        if self.max_p99_ms is not None and not self.max_p99_ms > 0:
            raise RolloutPlanError("max_p99_ms must be positive")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise RolloutPlanError("max_error_rate must be within 0..1")
        if self.min_ctr_ratio is not None and not self.min_ctr_ratio > 0:
            raise RolloutPlanError("min_ctr_ratio must be positive")
        if not 0.5 <= self.confidence < 1:
            raise RolloutPlanError("confidence must be within 0.5..1 (exclusive of 1)")
        if self.min_requests < 0 or self.min_impressions < 0:
            raise RolloutPlanError("min_requests and min_impressions must not be negative")


@dataclass(frozen=True, slots=True)
class Decision:
    at: float
    action: str  # start, advance, hold, rollback, complete, pause, resume, abort
    step: int
    percent: int
    shadow: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    operator: str = "controller"  # who decided: an operator's name, or the controller
    operator_via: str = "service"  # how the name is known (central.rollout.operator.Via)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    region: str
    version: int
    steps: tuple[int, ...]  # canary percent of each step, ending at 100
    shadow: bool  # a shadow step comes before the first percent step
    interval_s: float
    guardrails: Guardrails
    previous_stable: int | None  # what the region served before, restored on rollback
    status: PlanStatus = "running"
    step: int = 0  # index into stages(): the shadow step, when there is one, is 0
    step_started_at: float = 0.0
    created_at: float = 0.0
    reason: str = ""
    decisions: tuple[Decision, ...] = ()

    def __post_init__(self) -> None:
        check_steps(self.steps)
        if not self.interval_s > 0:
            raise RolloutPlanError("the step interval must be positive")
        if not 0 <= self.step < len(self.stages()):
            raise RolloutPlanError(f"step {self.step} is outside the plan")

    def stages(self) -> tuple[tuple[int, bool], ...]:
        """(percent, shadow) of every step in order."""
        lead = ((SHADOW_STEP, True),) if self.shadow else ()
        return lead + tuple((percent, False) for percent in self.steps)

    @property
    def percent(self) -> int:
        return self.stages()[self.step][0]

    @property
    def in_shadow(self) -> bool:
        return self.stages()[self.step][1]

    @property
    def last_step(self) -> bool:
        return self.step == len(self.stages()) - 1

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def decided(self, decision: Decision, **changes: Any) -> RolloutPlan:
        kept = (*self.decisions, decision)[-MAX_DECISIONS:]
        return replace(self, decisions=kept, **changes)

    def edge_record(self, previous: RolloutState | None) -> RolloutState:
        """What the region's edges should serve for this plan as it stands now."""
        rules_version = previous.rules_version if previous is not None else None
        step = (previous.step + 1) if previous is not None else 0
        last = self.decisions[-1] if self.decisions else None
        by = label(last.operator, last.operator_via) if last is not None else None
        if self.status == "completed":
            return RolloutState(
                stable=self.version,
                rules_version=rules_version,
                step=step,
                updated_at=now_iso(),
                by=by,
            )
        if self.status in ("rolled_back", "aborted"):
            # Going back below what edges serve is asked for explicitly (their version floor).
            back = (
                previous is not None
                and previous.stable is not None
                and self.previous_stable is not None
                and self.previous_stable < previous.stable
            )
            return RolloutState(
                stable=self.previous_stable,
                rules_version=rules_version,
                step=step,
                updated_at=now_iso(),
                by=by,
                rollback=back,
            )
        return RolloutState(
            stable=self.previous_stable,
            canary=self.version,
            canary_percent=self.percent,
            shadow=self.in_shadow,
            rules_version=rules_version,
            step=step,
            updated_at=now_iso(),
            by=by,
        )

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> RolloutPlan:
        try:
            raw = json.loads(data)
            guardrails = Guardrails(**raw.pop("guardrails"))
            decisions = tuple(Decision(**d) for d in raw.pop("decisions"))
            raw["steps"] = tuple(raw["steps"])
            return cls(guardrails=guardrails, decisions=decisions, **raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RolloutPlanError(f"unreadable rollout plan: {exc}") from exc


def check_steps(steps: tuple[int, ...]) -> tuple[int, ...]:
    if not steps:
        raise RolloutPlanError("a rollout needs at least one step")
    if any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 100 for s in steps):
        raise RolloutPlanError("every step is a canary percentage within 1..100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise RolloutPlanError("steps must increase, e.g. 5,25,50,100")
    if steps[-1] != 100:
        raise RolloutPlanError("the last step must be 100 (every session on the new bundle)")
    return steps


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise RolloutPlanError(f"steps must be comma-separated percentages, got {text!r}") from exc
    return check_steps(steps)
