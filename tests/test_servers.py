"""Smoke tests: each test server starts and speaks its protocol to the real client library."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nats.js.api import StorageType

from tests.servers import NatsServerFactory

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT = 10.0


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def test_nats_jetstream_deduplicates_and_serves_pull_consumers_and_kv(
    nats_url: str,
) -> None:
    stream = unique_name("SMOKE")
    subject = f"{stream}.events"
    connection = await nats.connect(nats_url)
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(name=stream, subjects=[f"{stream}.>"])

        headers = {"Nats-Msg-Id": "event-1"}
        first_ack = await jetstream.publish(subject, b"hello", headers=headers)
        second_ack = await jetstream.publish(subject, b"hello", headers=headers)
        assert not first_ack.duplicate
        assert second_ack.duplicate
        assert second_ack.seq == first_ack.seq

        subscription = await jetstream.pull_subscribe(subject, durable="smoke-reader")
        messages = await subscription.fetch(10, timeout=CLIENT_TIMEOUT)
        assert [message.data for message in messages] == [b"hello"]
        await messages[0].ack()
        await subscription.unsubscribe()

        bucket = await jetstream.create_key_value(bucket=unique_name("smoke_kv"))
        revision = await bucket.put("model.version", b"42")
        entry = await bucket.get("model.version")
        assert entry.value == b"42"
        assert entry.revision == revision
    finally:
        await connection.close()


async def test_nats_file_stream_survives_server_crash_and_restart(
    nats_server_factory: NatsServerFactory,
) -> None:
    server = nats_server_factory()
    url_before_crash = server.url
    connection = await nats.connect(server.url)
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(name="DURABLE", subjects=["durable.>"], storage=StorageType.FILE)
        ack = await jetstream.publish("durable.events", b"persisted")
    finally:
        await connection.close()

    server.kill()
    assert not server.is_running
    server.start()
    assert server.url == url_before_crash

    connection = await nats.connect(server.url)
    try:
        stored = await connection.jetstream().get_msg("DURABLE", seq=ack.seq)
        assert stored.data == b"persisted"
    finally:
        await connection.close()


async def test_redis_set_get_round_trip(redis_url: str) -> None:
    client = redis.from_url(redis_url)
    try:
        key = unique_name("smoke")
        assert await client.set(key, b"value", ex=60)
        assert await client.get(key) == b"value"
    finally:
        await client.aclose()


async def test_kafka_produce_then_consume_with_group(kafka_bootstrap: str) -> None:
    topic = unique_name("smoke")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    # The broker answers InitProducerId with UnknownError, so idempotence must stay off.
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"payload", key=b"user-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name("smoke_group"),
        auto_offset_reset="earliest",
        # The broker holds the first JoinGroup for half the session timeout (5s by default).
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=CLIENT_TIMEOUT)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"user-1", b"payload")
