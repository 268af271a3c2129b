"""``proxima rollout start --require-offpolicy LAKE``: no user sees a candidate that the
logged answers say is worse than the stable bundle.

Before any plan is written, the candidate and each region's stable bundle are fetched from
the bus, verified, and evaluated off-policy on the lake's logged answers
(:func:`central.outcomes.offpolicy.evaluate_models`, paired answer by answer); the start is
refused, naming the figures, unless the gate passes against every distinct stable bundle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from nats.js.client import JetStreamContext

from central.lake.layout import open_lake
from central.outcomes.logged import read_logged
from central.outcomes.offpolicy import GateSettings, OffPolicyResult, evaluate_models
from central.rollout.plan import RolloutPlanError
from central.rollout.store import read_edge_record
from protocol.bundle import read_bundle
from protocol.keys import load_public_key
from protocol.serving import ServingModel
from runtime.registry import ModelRegistry


class OffPolicyGateError(RolloutPlanError):
    code = "offpolicy_gate"
    status = 409


@dataclass(frozen=True, slots=True)
class OffPolicyRequirement:
    lake_dir: Path
    public_key: Path
    gate: GateSettings
    days: int = 14


async def check_offpolicy(
    js: JetStreamContext, version: int, regions: tuple[str, ...], need: OffPolicyRequirement
) -> dict[int, OffPolicyResult]:
    """The evaluation against each region's stable bundle; raises if any fails the gate."""
    key = load_public_key(need.public_key.read_bytes())
    registry = ModelRegistry(js)
    stables: set[int] = set()
    for region in regions:
        record, _ = await read_edge_record(js, region)
        if record is not None and record.stable is not None:
            stables.add(record.stable)
    if not stables:
        raise OffPolicyGateError("no region serves a stable bundle to compare the candidate with")

    async def model(number: int) -> ServingModel:
        data = await registry.fetch_bundle(number)
        return ServingModel.from_bundle(read_bundle(data, key))

    candidate = await model(version)
    layout = open_lake(need.lake_dir)
    files = layout.data_files(layout.days()[-need.days :])
    log = await asyncio.to_thread(read_logged, files)
    results: dict[int, OffPolicyResult] = {}
    for stable in sorted(stables):
        baseline = await model(stable)
        result = await asyncio.to_thread(evaluate_models, log, candidate, baseline, need.gate)
        results[stable] = result
        if not result.passed:
            difference = result.difference[need.gate.estimator]
            raise OffPolicyGateError(
                f"bundle {version} fails the off-policy gate against stable {stable}: "
                f"{need.gate.estimator} difference per answer {difference.estimate:+.4f} "
                f"[{difference.low:+.4f}, {difference.high:+.4f}] over {result.answers} logged "
                f"answers, margin {need.gate.margin:g}; no plan was written"
            )
    return results
