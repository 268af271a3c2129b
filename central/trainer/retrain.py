"""One retrain: pick a version, train on the stored events, gate against stable, publish.

Versions only grow: the next is one past every version the trainer has used or can see
(bundles in the object store, versions named by rollout records), and at least the
current Unix time, so versions also sort by age across state-directory losses. The
stable bundle compared with is the newest stable version among the configured regions
(all regions when none are configured). It is fetched from the object store and must
verify with the public half of the signing key; one that cannot be fetched, verified or
served is reported and the candidate is gated as if there were no stable bundle, since
edges could not load that bundle either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from nats.js.client import JetStreamContext

from central.errors import CentralError
from central.eventlog import EventLog
from central.rollout.operations import RolloutPolicy, roll_out_new_bundle
from central.trainer.eventstore import trainer_log
from central.trainer.gate import GateResult, compare_with_stable
from central.trainer.pipeline import TrainerConfig, train_bundle
from central.trainer.publish import (
    Buckets,
    bundle_versions,
    current_rollout,
    fetch_bundle,
    promote_regions,
    publish_bundle,
    rollout_states,
)
from protocol.bundle import read_bundle
from protocol.errors import ProtocolError
from protocol.keys import load_private_key
from protocol.serving import ServingModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetrainSettings:
    trainer: TrainerConfig
    private_key_pem: bytes
    regions: tuple[str, ...]
    max_hr_loss: float
    keep_bundles: int
    buckets: Buckets
    rollout: RolloutPolicy | None = None  # None: promote each passing bundle at once


@dataclass(frozen=True, slots=True)
class RetrainReport:
    version: int
    events: int
    sessions: int
    train_seconds: float
    gate_seconds: float
    validation: dict[str, Any]  # the candidate's own validation (manifest metrics)
    gate: GateResult
    published: bool
    promoted: tuple[str, ...]
    stable_note: str | None  # why a named stable bundle could not be compared with

    def summary(self) -> str:
        fp32 = self.validation.get("fp32", {})
        outcome = (
            f"published bundle {self.version}"
            + (f", stable in {', '.join(self.promoted)}" if self.promoted else "")
            if self.published
            else f"bundle {self.version} not published"
        )
        return (
            f"retrained on {self.events} events ({self.sessions} sessions) in "
            f"{self.train_seconds:.1f} s, gate {self.gate_seconds:.1f} s; fp32 validation HR@20 "
            f"{fp32.get('hr_at_20', float('nan')):.4f} MRR@20 "
            f"{fp32.get('mrr_at_20', float('nan')):.4f}; gate "
            f"{'passed' if self.gate.passed else 'refused'} ({self.gate.reason}); {outcome}"
        )


async def retrain(
    js: JetStreamContext,
    events: EventLog,
    settings: RetrainSettings,
    *,
    last_version: int | None,
) -> RetrainReport:
    version = await next_version(js, last_version, settings.buckets)
    stable, stable_note = await load_stable(js, settings)
    started = time.perf_counter()
    event_log = await asyncio.to_thread(trainer_log, events)
    result = await asyncio.to_thread(
        train_bundle,
        event_log,
        settings.trainer,
        version=version,
        private_key_pem=settings.private_key_pem,
    )
    trained = time.perf_counter()
    public_key = load_private_key(settings.private_key_pem).public_key()
    candidate = read_bundle(result.bundle, public_key)
    gate = await asyncio.to_thread(
        compare_with_stable,
        event_log,
        settings.trainer,
        candidate,
        stable,
        max_hr_loss=settings.max_hr_loss,
    )
    gated = time.perf_counter()
    promoted: tuple[str, ...] = ()
    if gate.passed:
        await publish_bundle(
            js, result.bundle, version, buckets=settings.buckets, keep=settings.keep_bundles
        )
        if settings.regions and settings.rollout is not None:
            rolled = await roll_out_new_bundle(js, version, settings.regions, settings.rollout)
            for region, what in rolled.items():
                log.info("bundle %d in %s: %s", version, region, what)
            promoted = tuple(r for r, what in rolled.items() if what.startswith("promoted"))
        elif settings.regions:
            await promote_regions(js, version, settings.regions, buckets=settings.buckets)
            promoted = settings.regions
    return RetrainReport(
        version=version,
        events=event_log.n_events,
        sessions=int(result.training["sessions"]),
        train_seconds=trained - started,
        gate_seconds=gated - trained,
        validation=result.manifest_metrics["validation"],
        gate=gate,
        published=gate.passed,
        promoted=promoted,
        stable_note=stable_note,
    )


async def next_version(js: JetStreamContext, last_version: int | None, buckets: Buckets) -> int:
    known = [last_version or 0, *await bundle_versions(js, buckets=buckets)]
    for state in (await rollout_states(js, buckets=buckets)).values():
        known.extend(state.versions())
    return max(int(time.time()), max(known) + 1)


async def load_stable(
    js: JetStreamContext, settings: RetrainSettings
) -> tuple[ServingModel | None, str | None]:
    """The stable bundle to compare with, ready to serve; or None and why not."""
    if settings.regions:
        named = [await current_rollout(js, r, buckets=settings.buckets) for r in settings.regions]
    else:
        named = list((await rollout_states(js, buckets=settings.buckets)).values())
    stables = [state.stable for state in named if state is not None and state.stable is not None]
    if not stables:
        return None, None
    version = max(stables)
    try:
        data = await fetch_bundle(js, version, buckets=settings.buckets)
        public_key = load_private_key(settings.private_key_pem).public_key()
        return ServingModel.from_bundle(read_bundle(data, public_key)), None
    except (CentralError, ProtocolError) as exc:
        note = f"stable bundle {version} cannot be compared with: {exc}"
        log.warning("%s; gating as if there were no stable bundle", note)
        return None, note
