"""The continuous trainer against a real nats-server and a real Kafka-protocol broker.

Buckets, topics and consumer groups get unique names per test, since the servers are
shared by the whole session.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nats.js.client import JetStreamContext

from central.kafka_settings import KafkaSettings
from central.rollout.operations import bundle_release
from central.trainer.eventstore import EventStore
from central.trainer.pipeline import TrainerConfig, train_bundle
from central.trainer.service import EVENTS_DIR, TrainerService, TrainerServiceConfig, TrainerStatus
from devtools.loggen import GeneratorConfig, generate
from protocol.bundle import read_bundle
from protocol.codec import encode_msgpack
from protocol.events import Event
from protocol.keys import generate_keypair, load_public_key
from protocol.rollout import RolloutState
from runtime.nats import NatsSettings
from runtime.registry import Buckets, ModelRegistry, RegistryError

pytestmark = pytest.mark.integration

EVENTUALLY_S = 90.0  # a guard against hanging, never a measure of speed
PRIVATE_PEM, PUBLIC_PEM = generate_keypair()
PUBLIC_KEY = load_public_key(PUBLIC_PEM)
SMALL_TRAINER = TrainerConfig(max_positions=2_000, folds=3)
REGIONS = ("eu", "us")


@dataclass(frozen=True)
class ShopLog:
    """A generated shop log as protocol events, cut by session start into three parts."""

    parts: tuple[list[Event], list[Event], list[Event]]

    @property
    def everything(self) -> list[Event]:
        return [event for part in self.parts for event in part]


@pytest.fixture(scope="module")
def shop_log() -> ShopLog:
    text = io.StringIO()
    generate(text, GeneratorConfig(sessions=700, items=300, categories=8, seed=5, days=10))
    text.seek(0)
    sessions: dict[str, list[Event]] = {}
    for number, row in enumerate(csv.DictReader(text)):
        event = Event(
            event_id=f"shop-{number:07d}",
            session_id=row["session_id"],
            user_id=row["user_id"] or None,
            type=row["event_type"],  # type: ignore[arg-type]
            item_id=row["item_id"],
            ts=int(row["timestamp"]),
            category=row["category"] or None,
            price=float(row["price"]) if row["price"] else None,
        )
        sessions.setdefault(event.session_id, []).append(event)
    by_start = sorted(sessions.values(), key=lambda events: min(e.ts for e in events))
    cuts = (0, 350, 550, len(by_start))
    parts = tuple(
        [event for events in by_start[start:stop] for event in events]
        for start, stop in itertools.pairwise(cuts)
    )
    return ShopLog(parts)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Bus:
    nats_url: str
    kafka_bootstrap: str
    topic: str
    group_id: str
    buckets: Buckets


@pytest.fixture
async def bus(nats_url: str, kafka_bootstrap: str) -> Bus:
    name = uuid.uuid4().hex[:10]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"events-{name}", 4, 1)])
    finally:
        await admin.close()
    return Bus(
        nats_url,
        kafka_bootstrap,
        f"events-{name}",
        f"trainer-{name}",
        Buckets(models=f"models-{name}", rollout=f"rollout-{name}"),
    )


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(nats_url)
    yield connection.jetstream()
    await connection.close()


@pytest.fixture
def buckets() -> Buckets:
    name = uuid.uuid4().hex[:10]
    return Buckets(models=f"models-{name}", rollout=f"rollout-{name}")


def service_config(bus: Bus, state_dir: Path, **overrides: object) -> TrainerServiceConfig:
    settings: dict[str, object] = {
        "nats": NatsSettings.from_url(bus.nats_url, name="test-trainer"),
        "kafka": KafkaSettings.from_bootstrap(
            bus.kafka_bootstrap,
            topic=bus.topic,
            dlq_topic=f"{bus.topic}.dlq",
            client_id="test-trainer",
        ),
        "state_dir": state_dir,
        "private_key_pem": PRIVATE_PEM,
        "regions": REGIONS,
        "on_published": bundle_release(REGIONS, None),
        "retrain_events": 500,
        "retrain_interval_s": 3_600.0,
        "min_events": 500,
        "trainer": SMALL_TRAINER,
        "group_id": bus.group_id,
        "buckets": bus.buckets,
        "kafka_session_timeout_ms": 2_000,
        "kafka_heartbeat_interval_ms": 500,
        "flush_interval_s": 0.2,
    }
    settings.update(overrides)
    return TrainerServiceConfig(**settings)  # type: ignore[arg-type]


async def produce(bus: Bus, records: list[bytes], keys: list[str]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bus.kafka_bootstrap, enable_idempotence=False, acks="all"
    )
    await producer.start()
    try:
        for value, key in zip(records, keys, strict=True):
            await producer.send(bus.topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def produce_events(bus: Bus, events: list[Event]) -> None:
    await produce(bus, [encode_msgpack(e) for e in events], [e.session_id for e in events])


async def run_until(
    service: TrainerService, done: Callable[[TrainerStatus], bool], what: str
) -> None:
    await service.start()
    stopped = asyncio.create_task(service.wait_stopped())
    try:
        deadline = asyncio.get_running_loop().time() + EVENTUALLY_S
        while not done(service.status):
            if stopped.done():
                stopped.result()
                pytest.fail(f"the service stopped before {what}")
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"gave up waiting until {what}: {service.status}")
            await asyncio.sleep(0.05)
    finally:
        await service.close(EVENTUALLY_S)
        await stopped


def stored(state_dir: Path) -> EventStore:
    return EventStore.open(state_dir / EVENTS_DIR)


def item_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e.item_id is not None]


async def test_the_trainer_publishes_resumes_and_retrains(
    bus: Bus, js: JetStreamContext, shop_log: ShopLog, tmp_path: Path
) -> None:
    registry = ModelRegistry(js, bus.buckets)
    first, second, _ = shop_log.parts
    search = Event(
        event_id="search-000001", session_id="s-x", type="search", ts=first[0].ts, query="lamp"
    )
    await produce_events(bus, [*first, search])
    await produce(bus, [b"\xc1 not msgpack"], ["s-bad"])

    service = TrainerService(service_config(bus, tmp_path))
    await run_until(service, lambda status: status.attempts >= 1, "the first retrain")
    status = service.status
    assert status.last_error is None
    assert status.consumed == len(first) + 2
    assert status.bad_records == 1
    report = status.last_retrain
    assert report is not None
    assert report.published and report.gate.passed
    assert report.gate.stable_version is None
    assert report.events == len(item_events(first))
    first_version = report.version
    bundle = read_bundle(await registry.fetch_bundle(first_version), PUBLIC_KEY)
    assert bundle.manifest.version == first_version
    assert bundle.manifest.training["events"] == len(item_events(first))
    for region in REGIONS:
        state = await registry.current_rollout(region)
        assert state is not None and state.stable == first_version
    with stored(tmp_path) as store:
        assert len(store) == len(item_events(first))
        assert sum(store.offsets.values()) == len(first) + 2

    redelivered = first[:100]
    await produce_events(bus, [*second, *redelivered])
    restarted = TrainerService(service_config(bus, tmp_path))
    await run_until(restarted, lambda status: status.attempts >= 1, "the second retrain")
    status = restarted.status
    assert status.last_error is None
    assert status.consumed == len(second) + len(redelivered)  # not from the beginning
    report = status.last_retrain
    assert report is not None
    assert report.version > first_version
    assert report.events == len(item_events(first)) + len(item_events(second))
    assert report.gate.stable_version == first_version
    assert report.gate.stable is not None
    with stored(tmp_path) as store:
        assert len(store) == len(item_events(first)) + len(item_events(second))
    versions = await registry.bundle_versions()
    states = [await registry.current_rollout(region) for region in REGIONS]
    if report.gate.passed:
        assert versions == [first_version, report.version]
        assert all(s is not None and s.stable == report.version and s.step == 1 for s in states)
    else:
        assert versions == [first_version]
        assert all(s is not None and s.stable == first_version for s in states)


async def test_a_bundle_worse_than_stable_is_not_published(
    bus: Bus, js: JetStreamContext, shop_log: ShopLog, tmp_path: Path
) -> None:
    registry = ModelRegistry(js, bus.buckets)
    # A stable bundle whose tables were built from the very sessions the gate replays:
    # no honestly trained candidate comes near it on them.
    events = shop_log.everything
    await produce_events(bus, events)
    state_dir = tmp_path / "trainer"
    with EventStore.open(tmp_path / "peek") as peek:
        peek.add(events)
        seen_everything = peek.to_eventlog()
    stable_version = 2**40
    stable = await asyncio.to_thread(
        train_bundle,
        seen_everything,
        SMALL_TRAINER,
        version=stable_version,
        private_key_pem=PRIVATE_PEM,
    )
    await registry.publish_bundle(stable.bundle, stable_version)
    await registry.promote_regions(stable_version, REGIONS)

    service = TrainerService(service_config(bus, state_dir))
    await run_until(service, lambda status: status.attempts >= 1, "a retrain")
    report = service.status.last_retrain
    assert report is not None
    assert report.version > stable_version
    assert report.gate.stable_version == stable_version
    assert report.gate.stable is not None
    assert not report.gate.passed
    assert not report.published
    assert report.gate.candidate.hr_at_20 < report.gate.stable.hr_at_20
    assert await registry.bundle_versions() == [stable_version]
    for region in REGIONS:
        state = await registry.current_rollout(region)
        assert state is not None and state.stable == stable_version


async def test_publish_keeps_the_newest_bundles_and_those_a_region_serves(
    js: JetStreamContext, buckets: Buckets
) -> None:
    registry = ModelRegistry(js, buckets)
    await registry.publish_bundle(b"one", 1, keep=2)
    await registry.promote_regions(1, ["eu"])
    for version in (2, 3, 4):
        await registry.publish_bundle(f"bundle {version}".encode(), version, keep=2)
    assert await registry.bundle_versions() == [1, 3, 4]
    assert await registry.fetch_bundle(4) == b"bundle 4"
    with pytest.raises(RegistryError):
        await registry.fetch_bundle(2)


async def test_promotion_counts_steps_and_keeps_the_rules_version(
    js: JetStreamContext, buckets: Buckets
) -> None:
    registry = ModelRegistry(js, buckets)
    assert await registry.current_rollout("eu") is None
    await registry.promote_regions(5, ["eu"])
    kv = await js.key_value(buckets.rollout)
    await kv.put("eu", RolloutState(stable=5, rules_version="r-2", step=3).encode())
    promoted = await registry.promote_regions(6, ["eu", "us"])
    eu = await registry.current_rollout("eu")
    us = await registry.current_rollout("us")
    assert eu == promoted["eu"]
    assert eu is not None and (eu.stable, eu.rules_version, eu.step) == (6, "r-2", 4)
    assert us is not None and (us.stable, us.rules_version, us.step) == (6, None, 0)
    assert (await kv.status()).history >= 5
