"""The bridge against a real nats-server and a real Kafka-protocol broker (Tansu).

Each test runs its own nats-server (so the EVENTS stream is its own) and writes to topics
with unique names on the shared broker; the Kafka outage test runs a broker of its own.
Tansu refuses idempotent producers, so the bridge runs with idempotence off except in the
tests that check the error for it. Kafka is always read back by consuming the topic: Tansu's
end offsets undercount.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner
from nats.js.api import StorageType

from central.bridge import Bridge, IdempotenceUnsupportedError
from central.bridge_jetstream import ensure_stream
from central.cli.bridge import bridge as bridge_command
from central.kafka_settings import KafkaSettings, KafkaSettingsError, ensure_topics
from protocol.codec import encode_msgpack
from protocol.events import MAX_EVENT_BYTES, Event
from protocol.subjects import (
    DUPLICATE_WINDOW_S,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    MSG_ID_HEADER,
    events_subject,
)
from runtime.nats import NatsSettings
from tests.servers import KafkaBroker, NatsServerFactory
from tests.support import eventually

pytestmark = pytest.mark.integration

EVENTUALLY_S = 120.0  # a guard against hanging, never a measure of speed
REPO_ROOT = Path(__file__).resolve().parents[2]
SUBJECT = events_subject("eu", "edge-1")


@dataclass(frozen=True)
class Published:
    event_id: str
    session_id: str
    payload: bytes


def make_events(count: int, *, sessions: int, start: int = 0) -> list[Published]:
    events = []
    for n in range(start, start + count):
        event = Event(
            event_id=f"evt-{n:010d}",
            session_id=f"s-{n % sessions:04d}",
            type="view",
            ts=1_732_000_000_000 + n,
            item_id=f"item-{n % 97}",
            region="eu",
            node="edge-1",
        )
        events.append(Published(event.event_id, event.session_id, encode_msgpack(event)))
    return events


def unique_topic() -> str:
    return f"test.bridge.{uuid.uuid4().hex[:10]}"


def kafka_settings(bootstrap: str, topic: str, **extra: Any) -> KafkaSettings:
    return KafkaSettings.from_bootstrap(bootstrap, topic=topic, dlq_topic=f"{topic}.dlq", **extra)


async def publish(nats_url: str, events: Sequence[Published]) -> None:
    """Publishes as edges do (``Nats-Msg-Id`` = event id), retrying while the server is away."""
    connection = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        jetstream = connection.jetstream()
        for event in events:
            await publish_one(jetstream, SUBJECT, event.payload, event.event_id)
    finally:
        await connection.close()


async def publish_backlog(nats_url: str, events: Sequence[Published]) -> None:
    """Fills the EVENTS stream (created as the bridge creates it) before a bridge runs."""
    connection = await nats.connect(nats_url)
    try:
        jetstream = connection.jetstream()
        await ensure_stream(jetstream, EVENTS_STREAM, [EVENTS_SUBJECTS])
        for event in events:
            headers = {MSG_ID_HEADER: event.event_id}
            await jetstream.publish_async(SUBJECT, event.payload, headers=headers, wait_stall=30)
        await jetstream.publish_async_completed()
        assert (await jetstream.stream_info(EVENTS_STREAM)).state.messages == len(events)
    finally:
        await connection.close()


async def publish_one(jetstream: Any, subject: str, payload: bytes, msg_id: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENTUALLY_S
    while True:
        try:
            await jetstream.publish(subject, payload, headers={MSG_ID_HEADER: msg_id}, timeout=2)
            return
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


class TopicReader:
    """Reads a topic from the beginning, with no consumer group, keeping every record."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.records: list[Any] = []

    def event_ids(self) -> list[str]:
        return [dict(record.headers)["event_id"].decode() for record in self.records]

    async def read_until(self, condition: Callable[[TopicReader], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVENTUALLY_S
        while not condition(self):
            if loop.time() > deadline:
                raise AssertionError(f"never read {what}; have {len(self.records)} records")
            await self._read_once(timeout_ms=200)

    async def read_stragglers(self) -> None:
        """One more read, so that duplicates written after the expected count are seen."""
        await self._read_once(timeout_ms=1_000)

    async def _read_once(self, timeout_ms: int) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for batch in batches.values():
            self.records.extend(batch)


@asynccontextmanager
async def topic_reader(bootstrap: str, topic: str) -> AsyncIterator[TopicReader]:
    """Open it only once the topic exists: Tansu creates topics that are merely asked about."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield TopicReader(consumer)
    finally:
        await consumer.stop()


def distinct_count(expected: int) -> Callable[[TopicReader], bool]:
    return lambda reader: len(set(reader.event_ids())) >= expected


# --- the happy path ------------------------------------------------------------------------


async def test_every_event_reaches_kafka_once_keyed_by_session_in_stream_order(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str
) -> None:
    server = nats_server_factory()
    topic = unique_topic()
    events = make_events(3_000, sessions=40)
    settings = kafka_settings(kafka_bootstrap, topic)
    async with Bridge(
        NatsSettings.from_url(server.url), settings, batch=200, partitions=3, idempotent=False
    ) as bridge:
        await publish(server.url, events)
        await eventually(
            lambda: bridge.status.acked == len(events),
            "every event acknowledged",
            timeout_s=EVENTUALLY_S,
        )
        await eventually_lag_zero(bridge)
        status = bridge.status
    assert (status.forwarded, status.dead_lettered, status.errors) == (len(events), 0, 0)

    async with topic_reader(kafka_bootstrap, topic) as reader:
        await reader.read_until(lambda r: len(r.records) >= len(events), "every record")
        await reader.read_stragglers()
        assert {record.partition for record in reader.records} <= {0, 1, 2}
    by_id = {event.event_id: event for event in events}
    assert sorted(reader.event_ids()) == sorted(by_id), "each event exactly once"
    partitions_of_session: dict[bytes, set[int]] = defaultdict(set)
    for record, event_id in zip(reader.records, reader.event_ids(), strict=True):
        assert record.key == by_id[event_id].session_id.encode()
        assert record.value == by_id[event_id].payload
        partitions_of_session[record.key].add(record.partition)
    assert all(len(partitions) == 1 for partitions in partitions_of_session.values())
    assert first_copies_by_session(reader) == by_session(events), "stream order per session"


async def test_creates_a_file_stream_with_the_dedupe_window_and_a_durable_consumer(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str
) -> None:
    server = nats_server_factory()
    settings = kafka_settings(kafka_bootstrap, unique_topic())
    async with Bridge(NatsSettings.from_url(server.url), settings, idempotent=False):
        pass
    connection = await nats.connect(server.url)
    try:
        jetstream = connection.jetstream()
        stream = await jetstream.stream_info(EVENTS_STREAM)
        consumer = await jetstream.consumer_info(EVENTS_STREAM, "proxima-bridge")
    finally:
        await connection.close()
    assert stream.config.subjects == [EVENTS_SUBJECTS]
    assert stream.config.storage == StorageType.FILE
    assert (stream.config.duplicate_window or 0) >= DUPLICATE_WINDOW_S
    assert consumer.config.durable_name == "proxima-bridge"


async def eventually_lag_zero(bridge: Bridge) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENTUALLY_S
    while await bridge.refresh_lag() != 0:
        if loop.time() > deadline:
            raise AssertionError(f"lag never reached 0: {bridge.status}")
        await asyncio.sleep(0.05)


# --- messages that are not events -----------------------------------------------------------


async def test_invalid_messages_go_to_the_dead_letter_topic_and_do_not_block_the_rest(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str
) -> None:
    server = nats_server_factory()
    topic = unique_topic()
    good = make_events(50, sessions=5)
    not_msgpack = b"\xc1 this is not msgpack"
    not_an_event = msgpack.packb({"event_id": "evt-bad-0001", "type": "view"})
    too_large = b"\x00" * (MAX_EVENT_BYTES + 1)
    bad = [not_msgpack, not_an_event, too_large]
    async with Bridge(
        NatsSettings.from_url(server.url), kafka_settings(kafka_bootstrap, topic),
        batch=20, partitions=2, idempotent=False,
    ) as bridge:  # fmt: skip
        connection = await nats.connect(server.url)
        try:
            jetstream = connection.jetstream()
            for number, payload in enumerate(bad):  # first, so that they would block the rest
                await publish_one(jetstream, SUBJECT, payload, f"bad-{number}")
        finally:
            await connection.close()
        await publish(server.url, good)
        await eventually(
            lambda: bridge.status.acked == len(good) + len(bad),
            "all settled",
            timeout_s=EVENTUALLY_S,
        )
        await eventually_lag_zero(bridge)
        status = bridge.status
    assert (status.forwarded, status.dead_lettered) == (len(good), len(bad))

    async with topic_reader(kafka_bootstrap, topic) as events_topic:
        await events_topic.read_until(lambda r: len(r.records) >= len(good), "the good events")
        await events_topic.read_stragglers()
    assert sorted(events_topic.event_ids()) == sorted(event.event_id for event in good)
    async with topic_reader(kafka_bootstrap, f"{topic}.dlq") as dead_letters:
        await dead_letters.read_until(lambda r: len(r.records) >= len(bad), "the bad messages")
        await dead_letters.read_stragglers()
    assert sorted(record.value for record in dead_letters.records) == sorted(bad)
    codes = {dict(record.headers)["error_code"] for record in dead_letters.records}
    assert codes == {b"malformed_msgpack", b"missing_field", b"event_too_large"}
    assert all(dict(r.headers)["subject"] == SUBJECT.encode() for r in dead_letters.records)


# --- crashes and outages --------------------------------------------------------------------


def start_bridge_process(nats_url: str, bootstrap: str, topic: str, log_path: Path) -> Any:
    argv = [
        sys.executable, "-c", "from central.cli.bridge import bridge; bridge()",
        "--nats", nats_url, "--kafka", bootstrap, "--topic", topic, "--no-idempotence",
        "--partitions", "3", "--batch", "50", "--ack-wait", "2", "--status-every", "0",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def test_a_bridge_killed_mid_stream_and_restarted_loses_nothing(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    server = nats_server_factory()
    topic = unique_topic()
    before_kill = make_events(20_000, sessions=200)
    while_down = make_events(500, sessions=200, start=len(before_kill))
    everything = before_kill + while_down
    await publish_backlog(server.url, before_kill)
    await ensure_topics(kafka_settings(kafka_bootstrap, topic), partitions=3)  # to read it early

    log_path = tmp_path / "bridge.log"
    process = start_bridge_process(server.url, kafka_bootstrap, topic, log_path)
    try:
        async with topic_reader(kafka_bootstrap, topic) as reader:
            await reader.read_until(lambda r: len(r.records) > 0, "a first record")
            process.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(process.wait) == -signal.SIGKILL
            await publish(server.url, while_down)

            process = start_bridge_process(server.url, kafka_bootstrap, topic, log_path)
            await reader.read_until(distinct_count(len(everything)), "every event")
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(process.wait, 60)
            assert exit_code == 0, log_path.read_text()
            await reader.read_stragglers()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert set(reader.event_ids()) == {event.event_id for event in everything}


async def test_nats_server_killed_and_restarted_mid_stream_loses_nothing(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str
) -> None:
    server = nats_server_factory()
    topic = unique_topic()
    before = make_events(20_000, sessions=60)
    after = make_events(1_000, sessions=60, start=len(before))
    await publish_backlog(server.url, before)
    async with Bridge(
        NatsSettings.from_url(server.url), kafka_settings(kafka_bootstrap, topic),
        batch=50, partitions=3, idempotent=False, ack_wait_s=2.0,
    ) as bridge:  # fmt: skip
        await eventually(
            lambda: bridge.status.forwarded > 0, "a first event forwarded", timeout_s=EVENTUALLY_S
        )
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)  # same port, same store: the stream is back
        await publish(server.url, after)
        async with topic_reader(kafka_bootstrap, topic) as reader:
            await reader.read_until(distinct_count(len(before) + len(after)), "every event")
        await eventually_lag_zero(bridge)
    assert set(reader.event_ids()) == {event.event_id for event in before + after}


async def test_nothing_is_acknowledged_while_kafka_is_down(
    nats_server_factory: NatsServerFactory, tmp_path: Path
) -> None:
    server = nats_server_factory()
    with KafkaBroker(tmp_path / "kafka") as broker:
        topic = unique_topic()
        first = make_events(100, sessions=10)
        during_outage = make_events(300, sessions=10, start=len(first))
        async with Bridge(
            NatsSettings.from_url(server.url),
            kafka_settings(broker.bootstrap, topic, request_timeout_ms=1_500),
            batch=50, partitions=2, idempotent=False, ack_wait_s=3.0, max_backoff_s=0.5,
        ) as bridge:  # fmt: skip
            await publish(server.url, first)
            await eventually(
                lambda: bridge.status.acked == len(first),
                "first events forwarded",
                timeout_s=EVENTUALLY_S,
            )
            await asyncio.to_thread(broker.kill)
            await publish(server.url, during_outage)
            await eventually(
                lambda: bridge.status.errors > 0,
                "the bridge noticed the outage",
                timeout_s=EVENTUALLY_S,
            )
            assert bridge.status.acked == len(first)
            assert await bridge.refresh_lag() == len(during_outage)

            await asyncio.to_thread(broker.start)  # Tansu keeps nothing: the topic comes back empty
            await eventually(
                lambda: bridge.status.acked == len(first) + len(during_outage),
                "all forwarded",
                timeout_s=EVENTUALLY_S,
            )
            async with topic_reader(broker.bootstrap, topic) as reader:
                await reader.read_until(distinct_count(len(during_outage)), "the held events")
    assert set(reader.event_ids()) == {event.event_id for event in during_outage}
    assert first_copies_by_session(reader) == by_session(during_outage), "order kept"


def by_session(events: Sequence[Published]) -> dict[str, list[str]]:
    sessions: dict[str, list[str]] = defaultdict(list)
    for event in events:
        sessions[event.session_id].append(event.event_id)
    return dict(sessions)


def first_copies_by_session(reader: TopicReader) -> dict[str, list[str]]:
    """Each session's event ids in partition order, duplicates dropped (first copy kept)."""
    placed = sorted(
        (record.partition, record.offset, record.key.decode(), event_id)
        for record, event_id in zip(reader.records, reader.event_ids(), strict=True)
    )
    seen: set[str] = set()
    sessions: dict[str, list[str]] = defaultdict(list)
    for _, _, session_id, event_id in placed:
        if event_id not in seen:
            seen.add(event_id)
            sessions[session_id].append(event_id)
    return dict(sessions)


async def test_a_deleted_consumer_is_recreated_and_forwarding_goes_on(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str
) -> None:
    server = nats_server_factory()
    topic = unique_topic()
    first = make_events(100, sessions=10)
    second = make_events(100, sessions=10, start=len(first))
    async with Bridge(
        NatsSettings.from_url(server.url), kafka_settings(kafka_bootstrap, topic),
        durable="doomed", batch=20, partitions=2, idempotent=False, max_backoff_s=0.5,
    ) as bridge:  # fmt: skip
        await publish(server.url, first)
        await eventually(
            lambda: bridge.status.acked == len(first),
            "first events forwarded",
            timeout_s=EVENTUALLY_S,
        )
        connection = await nats.connect(server.url)
        try:
            assert await connection.jetstream().delete_consumer(EVENTS_STREAM, "doomed")
        finally:
            await connection.close()
        await publish(server.url, second)
        async with topic_reader(kafka_bootstrap, topic) as reader:
            await reader.read_until(distinct_count(len(first) + len(second)), "every event")
    assert set(reader.event_ids()) == {event.event_id for event in first + second}


# --- idempotence, settings and the command ---------------------------------------------------


async def test_idempotent_producer_against_a_broker_without_it_fails_with_a_clear_error(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str
) -> None:
    server = nats_server_factory()
    bridge = Bridge(
        NatsSettings.from_url(server.url), kafka_settings(kafka_bootstrap, unique_topic())
    )
    try:
        await bridge.start()
    except IdempotenceUnsupportedError as refused:
        assert "--no-idempotence" in str(refused)
        assert "InitProducerId" in str(refused)
    else:
        await bridge.close()
        pytest.skip("this broker supports idempotent producers")


def test_the_command_reports_a_broker_without_idempotence(
    nats_server_factory: NatsServerFactory, kafka_bootstrap: str
) -> None:
    server = nats_server_factory()
    result = CliRunner().invoke(
        bridge_command,
        ["--topic", unique_topic()],
        env={"PROXIMA_NATS_URL": server.url, "PROXIMA_KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    assert result.exit_code == 1, result.output
    assert "--no-idempotence" in result.output
    assert "[kafka_idempotence_unsupported]" in result.output


def test_the_command_lists_its_options() -> None:
    result = CliRunner().invoke(bridge_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--nats", "--kafka", "--partitions", "--no-idempotence", "--durable"):
        assert option in result.output
    assert "PROXIMA_NATS_URL" in result.output
    assert "PROXIMA_KAFKA_BOOTSTRAP" in result.output


def test_kafka_settings_parse_bootstrap_lists_and_reject_nonsense() -> None:
    settings = KafkaSettings.from_bootstrap(" a:9092, b:9093 ,", topic="t", dlq_topic="t.dlq")
    assert settings.bootstrap_servers == ("a:9092", "b:9093")
    assert settings.producer_options(idempotent=True)["acks"] == "all"
    assert settings.producer_options(idempotent=False)["enable_idempotence"] is False
    for bad in ({"bootstrap_servers": ()}, {"bootstrap_servers": ("no-port",)},
                {"topic": "x", "dlq_topic": "x"}, {"replication_factor": 0}):  # fmt: skip
        with pytest.raises(KafkaSettingsError):
            KafkaSettings(**bad)
