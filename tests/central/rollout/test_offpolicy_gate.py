"""rollout start --require-offpolicy: refused before any plan when the logged answers say
the candidate is worse than the stable bundle, on a real nats-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner
from nats.js.client import JetStreamContext

from central.cli import main
from central.outcomes.offpolicy import GateSettings
from central.rollout.offpolicy_gate import (
    OffPolicyGateError,
    OffPolicyRequirement,
    check_offpolicy,
)
from central.rollout.store import read_plans
from devtools.localservers import NatsServer
from runtime.registry import ModelRegistry
from tests.central.outcomes.world import Trained, logged_lake


async def _publish(js: JetStreamContext, trained: Trained, stable: int) -> None:
    registry = ModelRegistry(js)
    for path, version in ((trained.paths["good"], 1), (trained.paths["bad"], 2)):
        await registry.publish_bundle(path.read_bytes(), version)
    await registry.promote_regions(stable, ["eu"])


async def test_a_worse_candidate_is_refused_and_a_better_one_passes(
    js: JetStreamContext, trained: Trained, tmp_path: Path
) -> None:
    lake = logged_lake(tmp_path / "lake", trained.models["good"], 200)
    need = OffPolicyRequirement(lake, trained.public_key, GateSettings(estimator="dr"))
    await _publish(js, trained, stable=1)
    with pytest.raises(OffPolicyGateError, match="fails the off-policy gate against stable 1"):
        await check_offpolicy(js, 2, ("eu",), need)
    await ModelRegistry(js).promote_regions(2, ["eu"])
    results = await check_offpolicy(js, 1, ("eu",), need)
    assert results[2].passed is True


def test_rollout_start_writes_no_plan_when_the_gate_fails(
    nats_server: NatsServer, trained: Trained, tmp_path: Path
) -> None:
    async def prepare() -> None:
        client = await nats.connect(nats_server.url)
        try:
            await _publish(client.jetstream(), trained, stable=1)
        finally:
            await client.close()

    asyncio.run(prepare())
    lake = logged_lake(tmp_path / "lake", trained.models["good"], 100)
    result = CliRunner().invoke(main, [
        "rollout", "start", "2", "--regions", "eu", "--nats", nats_server.url,
        "--require-offpolicy", str(lake), "--public-key", str(trained.public_key),
        "--operator", "tester",
    ])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "off-policy gate" in result.output and "no plan was written" in result.output
    assert "Traceback" not in result.output

    async def plans() -> int:
        client = await nats.connect(nats_server.url)
        try:
            return len(await read_plans(client.jetstream()))
        finally:
            await client.close()

    assert asyncio.run(plans()) == 0
