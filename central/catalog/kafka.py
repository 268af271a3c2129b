"""The catalog for the trainer: every change of the ``proxima-catalog`` KV into a compacted
Kafka topic (``proxima.catalog``), keyed by item id.

A :class:`CatalogFeed` watches the whole bucket on its role's one NATS connection and
produces each entry it sees (acks=all), the KV value as the message value, tombstones
included (``deleted: true``: the trainer must see deletions). A watch delivers the bucket's
current state first, so after any restart or reconnect every item is produced again; with
``cleanup.policy=compact`` the topic keeps the latest message per item, so that repetition
costs only bandwidth, and a consumer reading the topic from the start gets the whole catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from central.kafka_settings import KafkaSettings
from protocol.subjects import CATALOG_BUCKET, KAFKA_CATALOG_TOPIC
from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, describe_error

log = logging.getLogger("proxima.catalog.kafka")

CATALOG_TOPIC: Final = KAFKA_CATALOG_TOPIC
_PARTITIONS: Final = 6


class CatalogFeed(BusListener):
    def __init__(
        self,
        nats: NatsSettings,
        kafka: KafkaSettings,
        *,
        idempotent: bool = True,
        bucket: str = CATALOG_BUCKET,
        topic: str = CATALOG_TOPIC,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.bucket = bucket
        self.bus = BusSupervisor(nats)
        self._producer = AIOKafkaProducer(**kafka.producer_options(idempotent=idempotent))
        self._watch: asyncio.Task[None] | None = None
        self.produced = 0
        self.revision = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        await self._create_topic()
        await self._producer.start()
        self.bus.attach(self)
        await self.bus.start()

    async def close(self, timeout_s: float = 5.0) -> None:
        self.bus.detach(self)
        await self._stop_watching()
        await self.bus.close(timeout_s)
        with contextlib.suppress(KafkaError, asyncio.TimeoutError):
            await asyncio.wait_for(self._producer.stop(), timeout_s)

    async def _create_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self.kafka.admin_options())
        await admin.start()
        try:
            topic = NewTopic(
                self.topic, num_partitions=_PARTITIONS, replication_factor=1,
                topic_configs={"cleanup.policy": "compact"},
            )  # fmt: skip
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    async def bus_connected(self, connection: BusConnection) -> None:
        await self._stop_watching()
        self._watch = asyncio.create_task(self._forward(connection), name="catalog-to-kafka")

    async def bus_lost(self) -> None:
        await self._stop_watching()

    async def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _forward(self, connection: BusConnection) -> None:
        backoff = Backoff(0.2, 5.0)
        while connection.usable:
            try:
                kv = await connection.jetstream().key_value(self.bucket)
                watcher: Any = await kv.watchall()
            except BucketNotFoundError:
                await backoff.sleep(connection.lost)
                continue
            backoff.reset()
            try:
                while True:
                    entry = await watcher.updates(timeout=None)
                    if entry is None:
                        continue
                    if not isinstance(entry, KeyValue.Entry):
                        break
                    await self._produce(entry)
            except Exception as exc:
                self.last_error = describe_error(exc)
                log.warning("forwarding the catalog to Kafka failed: %s", self.last_error)
                await backoff.sleep(connection.lost)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(watcher.stop(), 1.0)

    async def _produce(self, entry: KeyValue.Entry) -> None:
        removed = entry.operation in (KV_DEL, KV_PURGE) or entry.value is None
        value = None if removed else entry.value  # a Kafka tombstone: the key is gone
        await self._producer.send_and_wait(self.topic, key=entry.key.encode(), value=value)
        self.produced += 1
        self.revision = max(self.revision, entry.revision or 0)
