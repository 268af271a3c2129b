"""The whole pipeline on real servers: edges over HTTP → JetStream → bridge → Kafka.

Edges run as real uvicorn servers in threads of the test process (:class:`EdgeServer`),
each with its own spool and bundle cache, following a nats-server of the test's own. Each
test runs a private Kafka-protocol broker (Tansu, started in well under a second), so the
events topic keeps its production name, ``proxima.events``. The bridge runs either in this
process (:class:`central.bridge.Bridge`) or as ``proxima central bridge`` in a subprocess
that a test may SIGKILL. Kafka is read back by consuming the topic from the beginning
without a consumer group, as a downstream consumer deduplicating by ``event_id`` would.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from central.bridge import Bridge
from central.kafka_settings import KafkaSettings, ensure_topics
from edge_node.config import EdgeSettings
from edge_node.model_store import ModelStore
from protocol.codec import decode_msgpack_event
from protocol.subjects import KAFKA_EVENTS_TOPIC
from runtime.nats import NatsSettings
from tests.edge_node import conftest as edge_fixtures
from tests.edge_node.conftest import EdgeServer, Keys
from tests.servers import KafkaBroker, pick_free_port

# The edge tests' session fixtures: keys, and a small bundle trained as version 7.
edge_keys = edge_fixtures.edge_keys
shop_log_path = edge_fixtures.shop_log_path
edge_bundle = edge_fixtures.edge_bundle

EVENTUALLY_S = 120.0  # a guard against hanging, never a measure of speed
REPO_ROOT = Path(__file__).resolve().parents[2]
TOPIC_PARTITIONS = 3
BRIDGE_ACK_WAIT_S = 2.0  # what a killed bridge held comes back this soon
_BRIDGE_RUNNING = "bridge running"  # what `proxima central bridge` logs once it forwards
EVENT_TYPES = ("view", "view", "view", "click", "add_to_cart", "purchase")


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeTraffic:
    """The JSON events one edge is sent: whole sessions, since a CDN routes by session."""

    edge: EdgeServer
    events: list[dict[str, Any]]

    @property
    def region(self) -> str:
        return self.edge.settings.region


def make_events(count: int, *, region: str, sessions: int, seed: int) -> list[dict[str, Any]]:
    """``count`` events of ``sessions`` shoppers, a few each, as a page would post them.

    Event ids are unique across runs and regions; sessions are spread so that no session
    comes near its rate limit.
    """
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:10]
    start_ms = 1_732_000_000_000
    events = []
    for n in range(count):
        session = n % sessions
        kind = rng.choice(EVENT_TYPES)
        event: dict[str, Any] = {
            "event_id": f"{region}-{run}-{n:07d}",
            "session_id": f"{region}-{run}-s{session:05d}",
            "type": kind,
            "item_id": f"item-{rng.randrange(400):04d}",
            "ts": start_ms + n,
            "category": f"cat-{rng.randrange(8)}",
            "price": round(rng.uniform(5, 200), 2),
            "context": {"page": "/p/item", "device": rng.choice(("mobile", "desktop"))},
        }
        if session % 3:
            event["user_id"] = f"user-{session:05d}"
        events.append(event)
    return events


def batches_of(events: Sequence[dict[str, Any]], seed: int) -> list[list[dict[str, Any]]]:
    """Consecutive batches of 100-500 events (the page's beacon sizes), in order."""
    rng = random.Random(seed)
    batches, start = [], 0
    while start < len(events):
        size = rng.randint(100, 500)
        batches.append(list(events[start : start + size]))
        start += size
    return batches


@dataclass
class PostTally:
    """What the edges answered; read by a test while the posters run."""

    accepted: int = 0
    duplicate: int = 0
    posts: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    accepted_by_region: Counter[str] = field(default_factory=Counter)


async def post_batches(
    url: str, batches: Sequence[list[dict[str, Any]]], tally: PostTally, region: str
) -> None:
    """Posts the batches in order over one connection; a refused batch is sent again."""
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        for batch in batches:
            await _post_until_taken(http, batch, tally, region)


async def _post_until_taken(
    http: httpx.AsyncClient, batch: list[dict[str, Any]], tally: PostTally, region: str
) -> None:
    body = json.dumps(batch).encode()
    deadline = asyncio.get_running_loop().time() + EVENTUALLY_S
    while True:
        try:
            response = await http.post(
                "/v1/events", content=body, headers={"content-type": "application/json"}
            )
        except httpx.TransportError:
            status = 0
        else:
            status = response.status_code
        tally.posts += 1
        tally.statuses[status] += 1
        if status == 202:
            counts = response.json()
            assert counts["rejected"] == 0, counts["rejections"]
            assert counts["accepted"] + counts["duplicate"] == len(batch), counts
            tally.accepted += counts["accepted"]
            tally.duplicate += counts["duplicate"]
            tally.accepted_by_region[region] += counts["accepted"]
            return
        assert status in (0, 429, 503), f"edge answered {status}: {response.text}"
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"the edge kept refusing a batch (last status {status})")
        tally.retries += 1
        await asyncio.sleep(0.1)


async def post_traffic(
    traffic: Sequence[EdgeTraffic], tally: PostTally, *, posters_per_edge: int, seed: int
) -> None:
    """Several concurrent posters per edge, each with its share of the edge's sessions."""
    posters = []
    for number, share in enumerate(traffic):
        by_poster: list[list[dict[str, Any]]] = [[] for _ in range(posters_per_edge)]
        for event in share.events:
            poster = zlib.crc32(event["session_id"].encode()) % posters_per_edge
            by_poster[poster].append(event)
        for index, events in enumerate(by_poster):
            batches = batches_of(events, seed=seed + 100 * number + index)
            posters.append(post_batches(share.edge.url, batches, tally, share.region))
    await asyncio.gather(*posters)


def expected_regions(traffic: Sequence[EdgeTraffic]) -> dict[str, str]:
    return {event["event_id"]: share.region for share in traffic for event in share.events}


# --- edges -----------------------------------------------------------------------------------


EdgeStarter = Callable[..., EdgeServer]


@pytest.fixture
def start_edge(tmp_path: Path, edge_keys: Keys) -> Iterator[EdgeStarter]:
    """Starts an edge of ``region`` following ``nats_url``; keyword arguments override settings.

    Each edge has its own spool and bundle cache; without ``bundle`` it serves what its
    cache or the bus gives it.
    """
    started: list[EdgeServer] = []

    def start(region: str, nats_url: str, **overrides: Any) -> EdgeServer:
        node = f"{region}-n{len(started)}"
        values: dict[str, Any] = {
            "region": region, "node": node, "public_key": edge_keys.public,
            "port": pick_free_port(), "nats_url": nats_url,
            "spool_dir": tmp_path / f"spool-{node}",
            "bundle_cache_dir": tmp_path / f"bundle-cache-{node}",
            "shutdown_timeout_s": 5.0,
        }  # fmt: skip
        values.update(overrides)
        server = EdgeServer(EdgeSettings.load(overrides=values)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def models_of(edge: EdgeServer) -> ModelStore:
    models: ModelStore = edge.app.state.edge.models
    return models


async def model_info(http: httpx.AsyncClient, edge: EdgeServer) -> dict[str, Any]:
    response = await http.get(f"{edge.url}/v1/model")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


async def eventually(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENTUALLY_S
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.02)


# --- Kafka -----------------------------------------------------------------------------------


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A private broker: the events topic keeps its real name and starts empty."""
    with KafkaBroker(tmp_path / "kafka") as broker:
        yield broker


def events_topic_settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings.from_bootstrap(bootstrap, topic=KAFKA_EVENTS_TOPIC)


class EventsTopicReader:
    """Reads ``proxima.events`` from the beginning in the background, counting every copy.

    ``copies`` maps event_id → records seen; ``regions`` the region stamped on it.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.copies: Counter[str] = Counter()
        self.regions: dict[str, str] = {}
        self.records = 0
        self.empty_rounds = 0  # consecutive reads that found nothing new
        self._task = asyncio.create_task(self._read_forever(), name="events-topic-reader")

    @property
    def distinct(self) -> int:
        return len(self.copies)

    @property
    def duplicates(self) -> int:
        return self.records - len(self.copies)

    async def _read_forever(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5_000)
            records = [record for batch in batches.values() for record in batch]
            self.empty_rounds = 0 if records else self.empty_rounds + 1
            for record in records:
                event_id = dict(record.headers)["event_id"].decode()
                event = decode_msgpack_event(record.value)
                assert event.event_id == event_id
                assert record.key == event.session_id.encode()
                self.copies[event_id] += 1
                self.regions[event_id] = event.region or ""
            self.records += len(records)

    def _check_alive(self) -> None:
        if self._task.done():
            self._task.result()  # raises what stopped it
            pytest.fail("the topic reader stopped")

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVENTUALLY_S
        while not condition():
            self._check_alive()
            if loop.time() > deadline:
                pytest.fail(f"never read {what}; have {self.distinct} distinct events")
            await asyncio.sleep(0.02)

    async def wait_for_all(self, event_ids: set[str]) -> None:
        await self.wait_for(lambda: event_ids.issubset(self.copies), f"{len(event_ids)} events")

    async def read_stragglers(self) -> None:
        """Waits for two empty reads in a row, so late copies are counted too."""
        await self.wait_for(lambda: self.empty_rounds >= 2, "the end of the topic")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def events_topic(kafka_broker: KafkaBroker) -> AsyncIterator[EventsTopicReader]:
    # Created first, as the bridge would: Tansu makes a topic that is merely asked about.
    await ensure_topics(events_topic_settings(kafka_broker.bootstrap), partitions=TOPIC_PARTITIONS)
    consumer = AIOKafkaConsumer(
        KAFKA_EVENTS_TOPIC, bootstrap_servers=kafka_broker.bootstrap, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    reader = EventsTopicReader(consumer)
    try:
        yield reader
    finally:
        await reader.stop()
        await consumer.stop()


def assert_exactly_once_after_dedupe(reader: EventsTopicReader, expected: dict[str, str]) -> None:
    """Every posted event is in Kafka, stamped with its edge's region; nothing else is."""
    missing = expected.keys() - reader.copies.keys()
    unexpected = reader.copies.keys() - expected.keys()
    assert not missing, f"{len(missing)} events never reached Kafka, e.g. {sorted(missing)[:5]}"
    assert not unexpected, f"{len(unexpected)} events nobody posted, e.g. {sorted(unexpected)[:5]}"
    assert reader.distinct == len(expected)
    wrong_region = [i for i, region in expected.items() if reader.regions[i] != region]
    assert not wrong_region, f"stamped with another region: {wrong_region[:5]}"


# --- the bridge ------------------------------------------------------------------------------


def in_process_bridge(nats_url: str, bootstrap: str) -> Bridge:
    """The bridge as ``proxima central bridge --no-idempotence`` runs it (Tansu has none)."""
    return Bridge(
        NatsSettings.from_url(nats_url, name="proxima-bridge"),
        events_topic_settings(bootstrap),
        partitions=TOPIC_PARTITIONS,
        idempotent=False,
        ack_wait_s=BRIDGE_ACK_WAIT_S,
    )


class BridgeProcess:
    """``proxima central bridge`` in a subprocess, which a test may SIGKILL and restart."""

    def __init__(self, nats_url: str, bootstrap: str, log_path: Path) -> None:
        self.argv = [
            str(Path(sys.executable).parent / "proxima"), "central", "bridge",
            "--nats", nats_url, "--kafka", bootstrap, "--no-idempotence",
            "--partitions", str(TOPIC_PARTITIONS), "--ack-wait", str(BRIDGE_ACK_WAIT_S),
            "--status-every", "0",
        ]  # fmt: skip
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._runs_logged = 0

    def start(self) -> BridgeProcess:
        self._runs_logged = self._running_lines()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _running_lines(self) -> int:
        return self.log_text().count(_BRIDGE_RUNNING)

    async def wait_until_running(self) -> None:
        """Until this start has logged that it forwards (stream, topics and producer ready)."""
        deadline = asyncio.get_running_loop().time() + EVENTUALLY_S
        while self._running_lines() <= self._runs_logged:
            process = self._process
            assert process is not None and process.poll() is None, self.log_text()
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"the bridge did not start; its log:\n{self.log_text()}")
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL: no batch settles, no acknowledgement is flushed."""
        process = self._process
        assert process is not None and process.poll() is None, self.log_text()
        process.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(process.wait) == -signal.SIGKILL

    async def stop(self) -> int:
        """SIGTERM, as an operator stops it; the exit code."""
        process = self._process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(process.wait, 60)

    def reap(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
