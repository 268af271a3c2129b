"""The catalog reaches a compacted Kafka topic for the trainer (real NATS, real broker)."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer
from nats.js.client import JetStreamContext

from central.catalog.kafka import CatalogFeed
from central.catalog.store import CatalogStore
from central.kafka_settings import KafkaSettings
from protocol.catalog import Item, decode_item
from runtime.nats import NatsSettings
from tests.servers import NatsServer
from tests.support import eventually


async def test_every_change_and_deletion_is_produced_keyed_by_item(
    js: JetStreamContext, nats_server: NatsServer, kafka_bootstrap: str
) -> None:
    store = await CatalogStore.open(js)
    await store.put([Item("k1", price=1.0), Item("k2", price=2.0)])
    topic = f"proxima.catalog.{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings.from_bootstrap(kafka_bootstrap, client_id="catalog-test")
    feed = CatalogFeed(
        NatsSettings.from_url(nats_server.url, name="catalog-feed"), kafka, idempotent=False,
        topic=topic,
    )  # fmt: skip
    await feed.start()
    try:
        await eventually(lambda: feed.produced >= 2, "the bucket's items produced")
        await store.delete(["k1"])
        await eventually(lambda: feed.produced >= 3, "the deletion produced")
    finally:
        await feed.close()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        group_id=f"g-{uuid.uuid4().hex[:6]}", consumer_timeout_ms=2000,
    )  # fmt: skip
    await consumer.start()
    try:
        latest: dict[str, Item] = {}
        while len(latest) < 2 or not latest["k1"].deleted:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, f"no more messages; have {latest}"
            for records in batch.values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    latest[record.key.decode()] = decode_item(record.value)
    finally:
        await consumer.stop()
    assert latest["k1"].deleted and latest["k2"].price == 2.0
