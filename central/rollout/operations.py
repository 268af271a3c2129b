"""What an operator does to rollouts: start, pause, resume, abort, roll back.

Each operation changes the region's plan by compare-and-set, writes the region's rollout
record when what edges serve changes (signed with the actor's key, when it has one), and
audits the decision with the operator who made it (:class:`~central.rollout.operator.Actor`;
without one, the controller's own :data:`~central.rollout.operator.AUTOMATIC`). The
controller does the walking; these only start, stop and steer it. :func:`bundle_release`
is what becomes of each bundle the trainer publishes (the commands that run a trainer hand
it over as the trainer's ``on_published``): promoted at once, or rolled out by a
:class:`RolloutPolicy`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.client import JetStreamContext

from central.rollout.operator import AUTOMATIC, TRAINER, Actor
from central.rollout.plan import Decision, Guardrails, RolloutPlan, RolloutPlanError
from central.rollout.store import apply_edge_record, audit, change_plan, read_edge_record
from protocol.subjects import MODELS_BUCKET, bundle_object_name, check_token
from runtime.registry import ModelRegistry

log = logging.getLogger("proxima.rollout")

RELEASES = Actor(TRAINER)  # the trainer's own releases, unsigned


@dataclass(frozen=True, slots=True)
class RolloutRequest:
    version: int
    regions: tuple[str, ...]
    steps: tuple[int, ...]
    interval_s: float
    guardrails: Guardrails
    shadow: bool = False


async def start_rollout(
    js: JetStreamContext, request: RolloutRequest, actor: Actor = AUTOMATIC
) -> list[RolloutPlan]:
    """Starts one plan per region; refuses before writing anything if any region cannot."""
    await _check_bundle_exists(js, request.version)
    now = time.time()
    drafts = []
    for region in request.regions:
        check_token(region, "region")
        record, _ = await read_edge_record(js, region)
        if record is None or record.stable is None:
            raise RolloutPlanError(
                f"region {region} serves no stable bundle yet; a canary needs one to be "
                "compared with (promote the first bundle directly)"
            )
        if record.stable == request.version:
            raise RolloutPlanError(f"bundle {request.version} is already stable in {region}")
        drafts.append(
            RolloutPlan(
                region=region,
                version=request.version,
                steps=request.steps,
                shadow=request.shadow,
                interval_s=request.interval_s,
                guardrails=request.guardrails,
                previous_stable=record.stable,
                step_started_at=now,
                created_at=now,
            )
        )
    started = []
    for draft in drafts:
        decision = _by(
            actor, Decision(now, "start", 0, draft.percent, draft.in_shadow, "started by operator")
        )

        async def begin(
            current: RolloutPlan | None, draft: RolloutPlan = draft, decision: Decision = decision
        ) -> RolloutPlan:
            if current is not None and current.active:
                raise RolloutPlanError(
                    f"bundle {current.version} is being rolled out in {current.region} "
                    f"({current.status}); abort it first"
                )
            return draft.decided(decision)

        plan = await change_plan(js, draft.region, begin)
        assert plan is not None
        await apply_edge_record(js, plan, actor.signer)
        await audit(js, plan, decision)
        started.append(plan)
    return started


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    """How each bundle the trainer publishes is rolled out, instead of promoted."""

    steps: tuple[int, ...]
    interval_s: float
    guardrails: Guardrails
    shadow: bool = False


async def roll_out_new_bundle(
    js: JetStreamContext,
    version: int,
    regions: Iterable[str],
    policy: RolloutPolicy,
    actor: Actor = RELEASES,
) -> dict[str, str]:
    """Starts ``policy``'s rollout in every region that has a stable bundle to compare with;
    a region without one gets ``version`` promoted, and one already rolling out is left
    alone. Returns what happened per region."""
    outcome: dict[str, str] = {}
    for region in regions:
        record, _ = await read_edge_record(js, region)
        if record is None or record.stable is None:
            await ModelRegistry(js).promote_regions(
                version, (region,), signer=actor.signer, by=actor.operator.label()
            )
            outcome[region] = "promoted (no stable bundle to compare with)"
            continue
        request = RolloutRequest(
            version, (region,), policy.steps, policy.interval_s, policy.guardrails, policy.shadow
        )
        try:
            await start_rollout(js, request, actor)
        except RolloutPlanError as exc:
            outcome[region] = f"not rolled out: {exc}"
            continue
        outcome[region] = "rollout started"
    return outcome


BundleRelease = Callable[[ModelRegistry, int], Awaitable[tuple[str, ...]]]


def bundle_release(
    regions: Iterable[str],
    policy: RolloutPolicy | None,
    signer: Ed25519PrivateKey | None = None,
) -> BundleRelease:
    """What to do with each newly published bundle: make it stable in ``regions`` (no
    policy), or start ``policy``'s rollout there (:func:`roll_out_new_bundle`). The function
    returned gets the publisher's registry and the version, and returns the regions where
    the bundle became stable at once. ``signer`` signs the rollout records written."""
    actor = Actor(TRAINER, signer)
    targets = tuple(check_token(region, "region") for region in regions)

    async def release(registry: ModelRegistry, version: int) -> tuple[str, ...]:
        if not targets:
            return ()
        if policy is None:
            await registry.promote_regions(
                version, targets, signer=signer, by=actor.operator.label()
            )
            return targets
        rolled = await roll_out_new_bundle(registry.js, version, targets, policy, actor)
        for region, what in rolled.items():
            log.info("bundle %d in %s: %s", version, region, what)
        return tuple(region for region, what in rolled.items() if what.startswith("promoted"))

    return release


async def pause(js: JetStreamContext, region: str, actor: Actor = AUTOMATIC) -> RolloutPlan:
    return await _steer(js, region, "pause", ("running",), "paused by operator", "paused", actor)


async def resume(js: JetStreamContext, region: str, actor: Actor = AUTOMATIC) -> RolloutPlan:
    return await _steer(
        js, region, "resume", ("paused",), "resumed by operator", "running", actor
    )


async def abort(js: JetStreamContext, region: str, actor: Actor = AUTOMATIC) -> RolloutPlan:
    return await _steer(
        js, region, "abort", ("running", "paused"), "aborted by operator", "aborted", actor
    )


async def rollback(js: JetStreamContext, region: str, actor: Actor = AUTOMATIC) -> RolloutPlan:
    """Withdraws an active canary, or brings back the stable bundle a completed rollout
    replaced."""

    async def roll_back(current: RolloutPlan | None) -> RolloutPlan:
        if current is None:
            raise RolloutPlanError(f"region {region} has no rollout to roll back")
        record, _ = await read_edge_record(js, region)
        now = time.time()
        if current.active:
            reason = "rolled back by operator"
        elif current.status == "completed" and record is not None:
            if record.stable != current.version:
                raise RolloutPlanError(
                    f"region {region} serves bundle {record.stable}, not {current.version} "
                    "that its last rollout made stable; nothing to roll back"
                )
            if current.previous_stable is None:
                raise RolloutPlanError(f"no earlier stable bundle is known for {region}")
            reason = f"rolled back by operator to bundle {current.previous_stable}"
        else:
            raise RolloutPlanError(
                f"the last rollout in {region} is {current.status.replace('_', ' ')}; "
                "nothing to roll back"
            )
        decision = _by(
            actor, Decision(now, "rollback", current.step, current.percent, False, reason)
        )
        return current.decided(decision, status="rolled_back", reason=reason)

    plan = await change_plan(js, check_token(region, "region"), roll_back)
    assert plan is not None
    await apply_edge_record(js, plan, actor.signer)
    await audit(js, plan, plan.decisions[-1])
    return plan


async def _steer(
    js: JetStreamContext,
    region: str,
    action: str,
    allowed: Iterable[str],
    reason: str,
    status: str,
    actor: Actor,
) -> RolloutPlan:
    allowed = tuple(allowed)

    async def steer(current: RolloutPlan | None) -> RolloutPlan:
        if current is None:
            raise RolloutPlanError(f"region {region} has no rollout")
        if current.status not in allowed:
            raise RolloutPlanError(
                f"the rollout of bundle {current.version} in {region} is {current.status}; "
                f"cannot {action} it"
            )
        now = time.time()
        changed = replace(current, status=status)  # type: ignore[arg-type]
        if action == "resume":  # the step's clock starts again
            changed = replace(changed, step_started_at=now)
        decision = _by(
            actor,
            Decision(now, action, current.step, current.percent, current.in_shadow, reason),
        )
        return changed.decided(decision, reason=reason if status == "aborted" else current.reason)

    plan = await change_plan(js, check_token(region, "region"), steer)
    assert plan is not None
    if action == "abort":
        await apply_edge_record(js, plan, actor.signer)
    await audit(js, plan, plan.decisions[-1])
    return plan


def _by(actor: Actor, decision: Decision) -> Decision:
    return replace(decision, operator=actor.operator.name, operator_via=actor.operator.via)


async def _check_bundle_exists(js: JetStreamContext, version: int) -> None:
    if await ModelRegistry(js).bundle_digest(version) is None:
        name = bundle_object_name(version)
        raise RolloutPlanError(f"{MODELS_BUCKET} holds no {name}; publish it first")
