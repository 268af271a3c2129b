"""Operators' rollout commands against a real nats-server: start, steer, roll back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest
from click.testing import CliRunner
from nats.js import JetStreamContext

from central.cli import main as cli
from central.rollout.operations import RolloutPolicy, roll_out_new_bundle
from central.rollout.plan import Guardrails
from central.rollout.store import audit_entries, read_edge_record, read_plan
from runtime.registry import ModelRegistry
from tests.servers import NatsServer


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    registry = ModelRegistry(js)
    for version in (7, 8, 9):  # the contents do not matter to the plans: edges check them
        await registry.publish_bundle(f"bundle {version}".encode(), version)
    await registry.promote_regions(7, ("eu",))
    yield js
    await client.close()


async def proxima(nats_server: NatsServer, *args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--nats", nats_server.url])
    return result.exit_code, result.output


async def test_operators_start_pause_resume_and_roll_back_through_the_cli(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    code, out = await proxima(nats_server, "rollout", "start", "8", "--regions", "eu",
                              "--steps", "10,100", "--step-interval", "5m", "--shadow")  # fmt: skip
    assert code == 0, out
    assert "eu: rolling out bundle 8 over 7, first step shadow" in out
    record, _ = await read_edge_record(js, "eu")
    assert record is not None
    assert (record.stable, record.canary, record.shadow) == (7, 8, True)

    code, out = await proxima(nats_server, "rollout", "start", "9", "--regions", "eu")
    assert code == 1 and "abort it first" in out

    assert (await proxima(nats_server, "rollout", "pause"))[1].strip() == "eu: bundle 8 paused"
    code, out = await proxima(nats_server, "rollout", "pause", "--region", "eu")
    assert code == 1 and "cannot pause" in out
    assert (await proxima(nats_server, "rollout", "resume"))[0] == 0

    code, out = await proxima(nats_server, "rollback", "--region", "eu")
    assert code == 0, out
    record, _ = await read_edge_record(js, "eu")
    assert record is not None and (record.stable, record.canary) == (7, None)
    found = await read_plan(js, "eu")
    assert found is not None and found[0].status == "rolled_back"
    actions = [e["action"] for e in await audit_entries(js, "eu")]
    assert actions == ["start", "pause", "resume", "rollback"]

    code, out = await proxima(nats_server, "rollout", "status", "--json")
    assert json.loads(out)["eu"]["plan"]["reason"] == "rolled back by operator"
    code, out = await proxima(nats_server, "rollback", "--region", "eu")
    assert code == 1 and "nothing to roll back" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rollout", "start", "8", "--regions", "eu", "--steps", "50,25,100"], "must increase"),
        (["rollout", "start", "8", "--regions", "e.u"], "region must be"),
        (["rollout", "start", "8", "--regions", "eu", "--step-interval", "soon"], "duration"),
        (["rollout", "start", "5", "--regions", "eu"], "holds no bundle-5"),
        (["rollout", "start", "8", "--regions", "us"], "serves no stable bundle"),
        (["rollout", "start", "7", "--regions", "eu"], "already stable"),
        (["rollback", "--region", "us"], "no rollout to roll back"),
    ],
)
async def test_bad_requests_get_a_clear_error(
    js: JetStreamContext, nats_server: NatsServer, args: list[str], message: str
) -> None:
    code, out = await proxima(nats_server, *args)
    assert code != 0
    assert message in out, out


async def test_the_trainer_rolls_out_where_a_stable_bundle_exists_and_promotes_elsewhere(
    js: JetStreamContext,
) -> None:
    policy = RolloutPolicy((25, 100), 60.0, Guardrails(), shadow=False)
    outcome = await roll_out_new_bundle(js, 8, ("eu", "us"), policy)
    assert outcome == {
        "eu": "rollout started",
        "us": "promoted (no stable bundle to compare with)",
    }
    eu, _ = await read_edge_record(js, "eu")
    us, _ = await read_edge_record(js, "us")
    assert eu is not None and (eu.stable, eu.canary, eu.canary_percent) == (7, 8, 25)
    assert us is not None and (us.stable, us.canary) == (8, None)
    again = await roll_out_new_bundle(js, 9, ("eu",), policy)
    assert again["eu"].startswith("not rolled out: bundle 8 is being rolled out")
