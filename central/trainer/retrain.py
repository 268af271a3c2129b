"""One retrain: pick a version, train on the stored events, gate against stable, publish.

Versions only grow: the next is one past every version the trainer has used or can see
(bundles in the object store, versions named by rollout records), and at least the
current Unix time, so versions also sort by age across state-directory losses. The
stable bundle compared with is the newest stable version among the configured regions
(all regions when none are configured). It is fetched from the object store and must
verify with the public half of the signing key; one that cannot be fetched, verified or
served is reported and the candidate is gated as if there were no stable bundle, since
edges could not load that bundle either.

What becomes of a published bundle (promoted, rolled out, left alone) is not decided here:
``on_published`` is told, and answers where the bundle became stable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from central.errors import CentralError
from central.eventlog import EventLog
from central.lake.layout import open_lake
from central.outcomes.logged import read_logged
from central.outcomes.offpolicy import GateSettings, evaluate_models
from central.trainer.eventstore import trainer_log
from central.trainer.gate import GateResult, compare_with_stable
from central.trainer.pipeline import TrainerConfig, train_bundle
from protocol.bundle import read_bundle
from protocol.errors import ProtocolError, ProximaError
from protocol.keys import load_private_key
from protocol.serving import ServingModel
from runtime.registry import ModelRegistry, RegistryError

# Told of each published bundle (the registry it went to, its version); returns the
# regions where it became the stable bundle.
OnPublished = Callable[[ModelRegistry, int], Awaitable[tuple[str, ...]]]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetrainSettings:
    trainer: TrainerConfig
    private_key_pem: bytes
    regions: tuple[str, ...]  # whose stable bundle a candidate is gated against; (): all
    max_hr_loss: float
    keep_bundles: int
    on_published: OnPublished | None = None  # None: publish only
    offpolicy: OffPolicyCheck | None = None  # also require the logged answers' verdict


@dataclass(frozen=True, slots=True)
class OffPolicyCheck:
    """Publish only if, on the lake's logged answers, the candidate is estimated no worse
    than the stable bundle (:mod:`central.outcomes.offpolicy`)."""

    lake_dir: Path
    gate: GateSettings = field(default_factory=GateSettings)
    days: int = 14


def offpolicy_verdict(
    gate: GateResult, check: OffPolicyCheck, candidate: ServingModel, stable: ServingModel
) -> GateResult:
    """``gate`` refused unless the off-policy estimate passes too (names the figures)."""
    try:
        layout = open_lake(check.lake_dir)
        log_ = read_logged(layout.data_files(layout.days()[-check.days :]))
        result = evaluate_models(log_, candidate, stable, check.gate)
    except ProximaError as exc:
        return replace(gate, passed=False, reason=f"off-policy gate not judged: {exc.message}")
    difference = result.difference[check.gate.estimator]
    figures = (
        f"off-policy {check.gate.estimator} {difference.estimate:+.4f} per answer "
        f"[{difference.low:+.4f}, {difference.high:+.4f}] over {result.answers} logged answers"
    )
    if not result.passed:
        return replace(gate, passed=False, reason=f"{figures}: worse than stable {stable.version}")
    return replace(gate, reason=f"{gate.reason}; {figures}")


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
    registry: ModelRegistry,
    events: EventLog,
    settings: RetrainSettings,
    *,
    last_version: int | None,
) -> RetrainReport:
    version = await next_version(registry, last_version)
    stable, stable_note = await load_stable(registry, settings)
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
    if gate.passed and stable is not None and settings.offpolicy is not None:
        gate = await asyncio.to_thread(
            offpolicy_verdict, gate, settings.offpolicy, ServingModel.from_bundle(candidate), stable
        )
    gated = time.perf_counter()
    promoted: tuple[str, ...] = ()
    if gate.passed:
        await registry.publish_bundle(result.bundle, version, keep=settings.keep_bundles)
        if settings.on_published is not None:
            promoted = await settings.on_published(registry, version)
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


async def next_version(registry: ModelRegistry, last_version: int | None) -> int:
    known = [last_version or 0, *await registry.bundle_versions()]
    for state in (await registry.rollout_states()).values():
        known.extend(state.versions())
    return max(int(time.time()), max(known) + 1)


async def load_stable(
    registry: ModelRegistry, settings: RetrainSettings
) -> tuple[ServingModel | None, str | None]:
    """The stable bundle to compare with, ready to serve; or None and why not."""
    if settings.regions:
        named = [await registry.current_rollout(r) for r in settings.regions]
    else:
        named = list((await registry.rollout_states()).values())
    stables = [state.stable for state in named if state is not None and state.stable is not None]
    if not stables:
        return None, None
    version = max(stables)
    try:
        data = await registry.fetch_bundle(version)
        public_key = load_private_key(settings.private_key_pem).public_key()
        return ServingModel.from_bundle(read_bundle(data, public_key)), None
    except (CentralError, ProtocolError, RegistryError) as exc:
        note = f"stable bundle {version} cannot be compared with: {exc}"
        log.warning("%s; gating as if there were no stable bundle", note)
        return None, note
