"""Variants and telemetry at the edge: which bundle answers whom, and what the node reports."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from edge_node.model_store import Canary, ModelStore
from edge_node.telemetry import TelemetryPublisher, TelemetryRecorder
from protocol.keys import load_public_key
from protocol.telemetry import TelemetryReport, decode_report
from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.supervisor import BusSupervisor
from tests.edge_node.conftest import EdgeFactory, Keys
from tests.servers import NatsServer
from tests.support import eventually


@pytest.fixture(scope="module")
def two_models(edge_bundle: Path, edge_keys: Keys) -> ModelStore:
    store = ModelStore(load_public_key(edge_keys.public.read_bytes()))
    stable = store.load_file(edge_bundle)
    canary = store.verify(edge_bundle.read_bytes(), "second copy")
    assert canary is not stable
    store.set_canary(Canary(canary, 30, shadow=False))
    return store


def test_a_canary_answers_its_share_of_sessions_and_a_session_keeps_its_variant(
    two_models: ModelStore,
) -> None:
    sessions = [f"s-{n}" for n in range(4000)]
    first = {s: two_models.choose(s)[1] for s in sessions}
    share = sum(v == "canary" for v in first.values()) / len(sessions)
    assert 0.27 < share < 0.33
    assert all(two_models.choose(s)[1] == first[s] for s in sessions)
    canary = two_models.canary
    assert canary is not None
    two_models.set_canary(Canary(canary.model, 60, shadow=False))  # the next step
    later = {s: two_models.choose(s)[1] for s in sessions}
    assert all(later[s] == "canary" for s in sessions if first[s] == "canary")
    two_models.set_canary(Canary(canary.model, 60, shadow=True))
    assert {two_models.choose(s)[1] for s in sessions} == {"stable"}
    two_models.set_canary(Canary(canary.model, 30, shadow=False))


def test_the_interval_counts_verified_feedback_answers_and_statuses() -> None:
    recorder = TelemetryRecorder()
    assert recorder.variant_feedback("canary", "impression", 8)
    assert recorder.variant_feedback("canary", "click", 8)
    recorder.variant_feedback("canary", "view", 8)  # not feedback: ignored
    assert not recorder.variant_feedback("canary", "click", 9)  # another canary's answer
    recorder.answered("canary", 8, 0.001)
    recorder.failed("canary", 8)
    recorder.http(200)
    recorder.http(503)
    recorder.http(500)
    report = recorder.take(TelemetryReport("eu", "n", 1, 1, 0, 0.0))
    canary = report.variants["canary"]
    assert (canary.version, canary.requests, canary.errors) == (8, 1, 1)
    assert (canary.impressions, canary.clicks) == (1, 1)
    assert (report.requests, report.errors, report.overloaded) == (3, 1, 1)
    assert "stable" not in report.variants
    empty = recorder.take(TelemetryReport("eu", "n", 2, 1, 0, 0.0))
    assert empty.variants == {} and empty.requests == 0  # the interval started afresh


async def test_an_edge_publishes_what_it_answered_on_its_telemetry_subject(
    edge_factory: EdgeFactory, nats_url: str
) -> None:
    client = await nats.connect(nats_url)
    subscription = await client.subscribe("telemetry.tele.>")
    edge = edge_factory(region="tele", node="t1", nats_url=nats_url, telemetry_interval_s=0.3)
    async with httpx.AsyncClient(timeout=10) as http:
        for n in range(12):
            answer = await http.get(
                f"{edge.url}/v1/recommendations", params={"session_id": f"x{n}"}
            )
            assert answer.status_code == 200
            assert answer.json()["variant"] == "stable"
    answered = 0
    deadline = asyncio.get_running_loop().time() + 30
    while answered < 12 and asyncio.get_running_loop().time() < deadline:
        message = await subscription.next_msg(timeout=30)
        assert message.subject == "telemetry.tele.t1"
        report = decode_report(message.data)
        assert report.ready and report.stable is not None
        if "stable" in report.variants:
            answered += report.variants["stable"].requests
            assert report.stages["request"].total >= 1
    await client.close()
    assert answered == 12


def away_status() -> dict[str, Any]:
    return {
        "ready": True,
        "stale": True,
        "stable": 3,
        "canary": None,
        "canary_percent": 0,
        "shadow": False,
        "refused": {},
        "spool_events": 0,
        "spool_bytes": 0,
        "publish_lag_s": 0.0,
    }


async def test_the_publisher_keeps_counting_while_the_bus_is_away() -> None:
    recorder = TelemetryRecorder()
    bus = BusSupervisor(NatsSettings(servers=("nats://127.0.0.1:1",), connect_timeout_s=0.2))
    publisher = TelemetryPublisher(
        recorder,
        bus,
        region="eu",
        node="n1",
        status=away_status,
        interval_s=0.05,
    )
    await bus.start()
    await publisher.start()
    recorder.answered("stable", 3, 0.001)
    await eventually(lambda: bus.status.last_error is not None, "the bus was tried")
    await asyncio.sleep(0.3)  # a few intervals without a connection
    await publisher.close()
    await bus.close()
    assert publisher.published == 0
    report = publisher.build_report()
    assert report.variants["stable"].requests == 1  # nothing was lost meanwhile


async def test_what_was_counted_while_the_bus_was_away_goes_out_once_it_is_back(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "late-nats")  # its URL is known before it runs
    bus = BusSupervisor(NatsSettings.from_url(server.url), backoff=Backoff(0.05, 0.5))
    recorder = TelemetryRecorder()
    publisher = TelemetryPublisher(
        recorder, bus, region="eu", node="late", status=away_status, interval_s=0.05
    )
    await bus.start()
    await publisher.start()
    try:
        for _ in range(3):
            recorder.answered("stable", 3, 0.001)
        await eventually(lambda: bus.status.last_error is not None, "the bus was tried")
        assert publisher.published == 0
        assert recorder.variants["stable"].requests == 3  # kept for the next report

        await asyncio.to_thread(server.start)
        await eventually(lambda: publisher.published >= 1, "a report went out")
        # the report that went out took the three answers from while the bus was away
        assert recorder.variants["stable"].requests == 0
    finally:
        await publisher.close()
        await bus.close()
        server.close()
