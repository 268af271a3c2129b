"""Rollout plans and their audit log on the bus.

* ``proxima-rollout-plans`` (KV, key ``<region>``): the plan being walked, or the last one.
  Every change is a compare-and-set on the key's revision, so the controller and the
  operator's commands never overwrite each other: the loser reads again and re-applies.
* ``ROLLOUT_AUDIT`` (JetStream stream, subjects ``rollout.audit.<region>``, file storage):
  every decision, with the figures behind it, kept for a year.
* The region's record in ``proxima-rollout``, which edges watch, is derived from the plan
  and written after it (see :func:`apply_edge_record`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.api import StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NoStreamResponseError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from central.rollout.plan import Decision, RolloutPlan, RolloutPlanError
from protocol.rollout import RolloutState
from protocol.subjects import check_token
from runtime.registry import ModelRegistry, decode_rollout

PLANS_BUCKET: Final = "proxima-rollout-plans"
AUDIT_STREAM: Final = "ROLLOUT_AUDIT"
AUDIT_SUBJECTS: Final = "rollout.audit.>"
AUDIT_MAX_AGE_S: Final = 365 * 24 * 3600
_CAS_ATTEMPTS: Final = 10


def audit_subject(region: str) -> str:
    return f"rollout.audit.{check_token(region, 'region')}"


class PlanConflictError(RolloutPlanError):
    """The plan kept changing under a read-modify-write."""

    code = "rollout_conflict"


async def plans_kv(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(PLANS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=PLANS_BUCKET, history=10)


async def ensure_audit_stream(js: JetStreamContext) -> None:
    try:
        await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=AUDIT_STREAM,
                subjects=[AUDIT_SUBJECTS],
                storage=StorageType.FILE,
                max_age=AUDIT_MAX_AGE_S,
                max_msgs_per_subject=100_000,
            )
        )


async def read_plan(js: JetStreamContext, region: str) -> tuple[RolloutPlan, int] | None:
    """The region's plan and its KV revision, or None when it never had one."""
    kv = await plans_kv(js)
    try:
        entry = await kv.get(check_token(region, "region"))
    except KeyNotFoundError:
        return None
    if entry.value is None or entry.revision is None:
        return None
    return RolloutPlan.decode(entry.value), entry.revision


async def read_plans(js: JetStreamContext) -> dict[str, tuple[RolloutPlan, int]]:
    kv = await plans_kv(js)
    try:
        regions = await kv.keys()
    except (NoKeysError, NotFoundError):  # an empty bucket (nats-py >= 2.7 / older)
        return {}
    plans = {}
    for region in regions:
        found = await read_plan(js, region)
        if found is not None:
            plans[region] = found
    return plans


Change = Callable[[RolloutPlan | None], Awaitable[RolloutPlan | None]]


async def change_plan(js: JetStreamContext, region: str, change: Change) -> RolloutPlan | None:
    """Applies ``change`` to the region's plan by compare-and-set, re-reading on conflict.

    ``change`` gets the current plan (None when there is none) and returns the new one, or
    None to write nothing. Returns what was written.
    """
    kv = await plans_kv(js)
    for _ in range(_CAS_ATTEMPTS):
        found = await read_plan(js, region)
        current, revision = found if found is not None else (None, None)
        updated = await change(current)
        if updated is None:
            return None
        try:
            if revision is None:
                await kv.create(region, updated.encode())
            else:
                await kv.update(region, updated.encode(), last=revision)
        except KeyWrongLastSequenceError:
            continue
        return updated
    raise PlanConflictError(f"the rollout plan of {region} kept changing; try again")


async def audit(js: JetStreamContext, plan: RolloutPlan, decision: Decision) -> None:
    entry = {"region": plan.region, "version": plan.version} | asdict(decision)
    data = json.dumps(entry).encode()
    try:
        await js.publish(audit_subject(plan.region), data)
    except NoStreamResponseError:  # the first decision on this bus: make the stream
        await ensure_audit_stream(js)
        await js.publish(audit_subject(plan.region), data)


async def audit_entries(
    js: JetStreamContext, region: str, limit: int = 50
) -> list[dict[str, object]]:
    """The newest ``limit`` audit entries of a region, oldest first."""
    await ensure_audit_stream(js)
    info = await js.stream_info(AUDIT_STREAM, subjects_filter=audit_subject(region))
    if not info.state.subjects:
        return []
    subscription = await js.subscribe(audit_subject(region), ordered_consumer=True)
    entries: list[dict[str, object]] = []
    try:
        total = info.state.subjects.get(audit_subject(region), 0)
        for _ in range(total):
            message = await subscription.next_msg(timeout=2.0)
            entries.append(json.loads(message.data))
    finally:
        await subscription.unsubscribe()
    return entries[-limit:]


async def read_edge_record(js: JetStreamContext, region: str) -> tuple[RolloutState | None, int]:
    """The region's record in the rollout bucket and its revision (0: it has none)."""
    kv = await ModelRegistry(js).rollout_kv()
    try:
        entry = await kv.get(region)
    except KeyNotFoundError:
        return None, 0
    return decode_rollout(region, entry.value), entry.revision or 0


async def apply_edge_record(
    js: JetStreamContext, plan: RolloutPlan, signer: Ed25519PrivateKey | None = None
) -> RolloutState:
    """Writes what the region's edges should serve for ``plan`` (compare-and-set), signed
    with ``signer`` when given (edges with ``rollout_public_keys`` follow only signed ones)."""
    kv = await ModelRegistry(js).rollout_kv()
    for _ in range(_CAS_ATTEMPTS):
        previous, revision = await read_edge_record(js, plan.region)
        record = plan.edge_record(previous)
        if signer is not None:
            record = record.signed(signer, region=plan.region)
        try:
            if revision == 0:
                await kv.create(plan.region, record.encode())
            else:
                await kv.update(plan.region, record.encode(), last=revision)
        except KeyWrongLastSequenceError:
            continue
        return record
    raise PlanConflictError(f"the rollout record of {plan.region} kept changing; try again")
