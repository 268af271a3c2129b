"""Staged rollouts on real servers: edges in two regions, the monitor and the controller.

The edges are real uvicorn servers following a real nats-server and publishing telemetry
every half second; the latency monitor and the rollout controller run in the test's event
loop as services on their own connections, as ``proxima central controller`` runs them. A load task
keeps asking both regions for recommendations from a pool of sessions and sends back
impressions and clicks with the answers' request ids, recording which bundle answered
each session over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from nats.js import JetStreamContext

from central.cli import main as cli
from central.monitor.service import LatencyMonitor, MonitorSettings
from central.rollout.operations import RolloutRequest, start_rollout
from central.rollout.plan import Guardrails, RolloutPlan
from central.rollout.service import RolloutService
from central.rollout.store import audit_entries, read_plan
from protocol.keys import load_private_key
from runtime.nats import NatsSettings
from runtime.registry import ModelRegistry
from tests.edge_node.conftest import EdgeServer, Keys
from tests.edge_node.test_model_sync import corrupt_a_part, resign_bundle
from tests.integration.conftest import EVENTUALLY_S, EdgeStarter, model_info
from tests.servers import NatsServer

pytestmark = pytest.mark.integration

REGIONS = ("eu", "us")
STABLE = 7  # the version the edge_bundle fixture is trained as
TELEMETRY_S = 0.5


@dataclass
class Signer:
    trained: bytes
    keys: Keys

    def signed(self, version: int) -> bytes:
        key = load_private_key(self.keys.private.read_bytes())
        return resign_bundle(self.trained, version, read_with=key.public_key(), sign_with=key)


@pytest.fixture
def signer(edge_bundle: Path, edge_keys: Keys) -> Signer:
    return Signer(edge_bundle.read_bytes(), edge_keys)


@pytest.fixture
async def edges(
    start_edge: EdgeStarter, nats_server: NatsServer, edge_bundle: Path, js: JetStreamContext,
    signer: Signer,
) -> dict[str, EdgeServer]:  # fmt: skip
    registry = ModelRegistry(js)
    await registry.publish_bundle(signer.signed(STABLE), STABLE)
    await registry.promote_regions(STABLE, REGIONS)
    return {
        region: start_edge(
            region, nats_server.url, bundle=edge_bundle, telemetry_interval_s=TELEMETRY_S
        )
        for region in REGIONS
    }


@pytest.fixture
async def controller(nats_server: NatsServer) -> AsyncIterator[RolloutService]:
    monitor = LatencyMonitor(MonitorSettings(nats=NatsSettings.from_url(nats_server.url)))
    await monitor.start()
    await monitor.wait_listening(EVENTUALLY_S)
    control = RolloutService(NatsSettings.from_url(nats_server.url), monitor.store, tick_s=0.2)
    await control.start()
    yield control
    await control.close()
    await monitor.close()


@dataclass
class Load:
    """Recommendations for a pool of sessions per region, with impressions and clicks."""

    http: httpx.AsyncClient
    edges: dict[str, EdgeServer]
    sessions: int = 60
    seen: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        rng = random.Random(7)
        run = uuid.uuid4().hex[:8]
        n = 0
        while not self.stopping.is_set():
            for region, edge in self.edges.items():
                session = f"{region}-{run}-{rng.randrange(self.sessions)}"
                answer = await self.http.get(
                    f"{edge.url}/v1/recommendations", params={"session_id": session, "k": 5}
                )
                self.statuses[answer.status_code] += 1
                if answer.status_code != 200:
                    continue
                body = answer.json()
                self.seen[session].append(body["model_version"])
                n += 1
                feedback = [_event(f"{run}-{n}-i", session, "impression", body)]
                if rng.random() < 0.3:
                    feedback.append(_event(f"{run}-{n}-c", session, "click", body))
                await self.http.post(f"{edge.url}/v1/events", json=feedback)
            await asyncio.sleep(0.005)

    def versions(self, region: str) -> set[int]:
        return {v for s, seen in self.seen.items() if s.startswith(f"{region}-") for v in seen}


def _event(event_id: str, session: str, kind: str, answer: dict[str, object]) -> dict[str, object]:
    items = [item["item_id"] for item in answer["items"]]  # type: ignore[attr-defined]
    event: dict[str, object] = {
        "event_id": f"ev-{event_id}",
        "session_id": session,
        "type": kind,
        "request_id": answer["request_id"],
        "ts": 1_767_225_600_000,
    }
    if kind == "impression":
        event["items"] = items
    else:
        event["item_id"] = items[0] if items else "none"
    return event


@contextlib.asynccontextmanager
async def load_on(edges: dict[str, EdgeServer]) -> AsyncIterator[Load]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        load = Load(http, edges)
        task = asyncio.create_task(load.run())
        try:
            yield load
        finally:
            load.stopping.set()
            await task


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + EVENTUALLY_S
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.05)


async def plan_of(js: JetStreamContext, region: str) -> RolloutPlan:
    found = await read_plan(js, region)
    assert found is not None, f"no plan in {region}"
    return found[0]


async def finished(js: JetStreamContext, region: str) -> bool:
    return not (await plan_of(js, region)).active


async def test_a_good_bundle_walks_every_step_in_one_region_while_the_other_stays(
    edges: dict[str, EdgeServer], js: JetStreamContext, signer: Signer,
    controller: RolloutService,
) -> None:  # fmt: skip
    await ModelRegistry(js).publish_bundle(signer.signed(8), 8)
    request = RolloutRequest(
        version=8,
        regions=("eu",),
        steps=(25, 50, 100),
        interval_s=1.5,
        guardrails=Guardrails(max_p99_ms=2000, max_error_rate=0.01, min_requests=20,
                              min_ctr_ratio=0.05, min_impressions=30),
        shadow=True,
    )  # fmt: skip
    async with load_on(edges) as load:
        await start_rollout(js, request)
        await until(lambda: finished(js, "eu"), "the eu rollout finishes")
        plan = await plan_of(js, "eu")
        async with httpx.AsyncClient() as http:
            await until(lambda: _serves(http, edges["eu"], stable=8), "eu edges serve 8 as stable")
    assert plan.status == "completed", plan.reason
    actions = [(d.action, "shadow" if d.shadow else d.percent) for d in plan.decisions]
    moves = [a for a in actions if a[0] != "hold"]
    assert moves == [
        ("start", "shadow"), ("advance", 25), ("advance", 50), ("advance", 100), ("complete", 100)
    ], actions  # fmt: skip
    for decision in plan.decisions:
        if decision.action in ("advance", "complete"):
            assert decision.figures["canary_answers"] >= 20, decision
            assert decision.figures["canary_p99_ms"] > 0, decision
    assert plan.decisions[1].figures["overlap_at_k"] is not None  # judged in shadow

    assert load.versions("us") == {STABLE}, "the other region saw the new bundle"
    assert load.versions("eu") == {STABLE, 8}
    assert set(load.statuses) == {200}, load.statuses
    for session, seen in load.seen.items():  # a session that got 8 never goes back to 7
        if 8 in seen:
            first = seen.index(8)
            assert set(seen[first:]) == {8}, (session, seen)
    async with httpx.AsyncClient() as http:
        assert (await model_info(http, edges["us"]))["bundle"]["version"] == STABLE

    runner = CliRunner()
    shown = await asyncio.to_thread(
        runner.invoke, cli, ["rollout", "status", "--json", "--audit", "20", "--nats",
                             edges["eu"].settings.nats_url or ""]
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    assert set(status) == {"eu"}
    assert status["eu"]["plan"]["status"] == "completed"
    assert status["eu"]["edges"]["stable"] == 8
    audited = [entry["action"] for entry in status["eu"]["audit"] if entry["action"] != "hold"]
    assert audited == ["start", "advance", "advance", "advance", "complete"]
    text = await asyncio.to_thread(
        runner.invoke, cli, ["rollout", "status", "--nats", edges["eu"].settings.nats_url or ""]
    )
    assert "completed" in text.output and "advance" in text.output, text.output
    print(f"\nrollout of 8 in eu:\n{text.output}")


async def _serves(http: httpx.AsyncClient, edge: EdgeServer, *, stable: int) -> bool:
    info = await model_info(http, edge)
    return bool(info["bundle"]["version"] == stable and info["canary"] is None)


async def test_a_bundle_over_the_p99_ceiling_is_rolled_back_and_never_seen_again(
    edges: dict[str, EdgeServer], js: JetStreamContext, signer: Signer,
    controller: RolloutService,
) -> None:  # fmt: skip
    await ModelRegistry(js).publish_bundle(signer.signed(9), 9)
    request = RolloutRequest(
        version=9,
        regions=REGIONS,
        steps=(50, 100),
        interval_s=30.0,
        # No answer takes under a microsecond: this canary is "slower" than allowed.
        guardrails=Guardrails(max_p99_ms=0.001, min_requests=20),
    )
    async with load_on(edges) as load:
        await start_rollout(js, request)
        for region in REGIONS:
            await until(functools.partial(finished, js, region), f"{region} rolls back")
        async with httpx.AsyncClient() as http:
            for edge in edges.values():
                await until(functools.partial(_serves, http, edge, stable=STABLE), "canary gone")
        load.seen.clear()
        await asyncio.sleep(2 * TELEMETRY_S)
    for region in REGIONS:
        plan = await plan_of(js, region)
        assert plan.status == "rolled_back"
        assert "p99" in plan.reason and "above the allowed 0.001 ms" in plan.reason
        entries = await audit_entries(js, region)
        assert entries[-1]["action"] == "rollback"
        assert entries[-1]["reason"] == plan.reason
        assert entries[-1]["figures"]["canary_answers"] >= 20  # type: ignore[index]
    assert sum(len(s) for s in load.seen.values()) > 20
    assert {v for seen in load.seen.values() for v in seen} == {STABLE}


async def test_a_bundle_edges_refuse_is_rolled_back_with_the_reason(
    edges: dict[str, EdgeServer], js: JetStreamContext, signer: Signer,
    controller: RolloutService,
) -> None:  # fmt: skip
    await ModelRegistry(js).publish_bundle(corrupt_a_part(signer.signed(10)), 10)
    request = RolloutRequest(
        version=10, regions=("us",), steps=(10, 100), interval_s=30.0,
        guardrails=Guardrails(min_requests=20),
    )  # fmt: skip
    async with load_on(edges) as load:
        await start_rollout(js, request)
        await until(lambda: finished(js, "us"), "us rolls back")
    plan = await plan_of(js, "us")
    assert plan.status == "rolled_back"
    assert "refused by" in plan.reason and "part_hash_mismatch" in plan.reason, plan.reason
    assert 10 not in load.versions("us")
    assert set(load.statuses) == {200}
