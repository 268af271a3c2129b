"""The demo's own look at the bus and the event log, asked of the real systems.

:class:`BusWatch` keeps one NATS connection and one Kafka reader open on an event loop
of its own, in a thread of its own, so the demo's synchronous steps can ask, as often as
they like: how many events the ``EVENTS`` stream holds per subject, what the Kafka topic
holds (records and distinct event ids, per region), what each region's rollout record
names as stable, and what a published bundle's manifest says. The loop's thread keeps stop
signals away from the clients' callbacks: they reach the main thread, waiting for an answer,
which then cancels the question.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from devtools.demo.errors import DemoError
from protocol.bundle import Bundle, read_bundle
from protocol.codec import decode_msgpack_event
from protocol.errors import ProtocolError
from protocol.keys import load_public_key
from protocol.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, KAFKA_EVENTS_TOPIC
from runtime.registry import ModelRegistry, RegistryError

_REQUEST_TIMEOUT_S = 5.0
_KAFKA_POLL_MS = 100
_KAFKA_MAX_RECORDS = 5_000
_ASSIGNMENT_POLLS = 100  # of _KAFKA_POLL_MS each
_READ_TO_END_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamCounts:
    messages: int  # in the EVENTS stream, after JetStream's duplicate window
    by_subject: dict[str, int]  # events.<region>.<node> -> messages

    def of_region(self, region: str) -> int:
        prefix = f"events.{region}."
        return sum(n for subject, n in self.by_subject.items() if subject.startswith(prefix))


@dataclass(frozen=True, slots=True)
class TopicCounts:
    """What the events topic held when read to its end."""

    records: int  # every copy, as at-least-once delivery may write an event twice
    distinct: int  # distinct event ids
    distinct_by_region: dict[str, int]  # by the region the edge stamped on the event

    def distinct_of_region(self, region: str) -> int:
        return self.distinct_by_region.get(region, 0)


class BusWatch:
    def __init__(self, nats_url: str, kafka_bootstrap: str) -> None:
        self.nats_url = nats_url
        self.kafka_bootstrap = kafka_bootstrap
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-bus", daemon=True)
        self._thread.start()
        self._nats: NatsClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._records = 0
        # event_id -> the region the edge stamped; bounded by the demo's own traffic
        self._region_of: dict[str, str] = {}

    def connect(self) -> None:
        """Connects to NATS and Kafka, and makes the model and rollout buckets, as an
        operator sets up the bus, so that the edges watch their rollout key from the start."""
        self._run(self._connect())

    def topic_exists(self) -> bool:
        """Whether the events topic exists (the bridge makes it once it is ready to forward)."""
        return self._run(self._topic_exists())

    def follow_topic(self) -> None:
        """Starts reading the events topic from its beginning (call once it exists: the
        Kafka-protocol broker of the demo makes any topic a client merely asks about)."""
        self._consumer_started().subscribe([KAFKA_EVENTS_TOPIC])

    def stream(self) -> StreamCounts:
        return self._run(self._stream())

    def topic(self) -> TopicCounts:
        """Reads the topic to its current end and returns the running counts."""
        return self._run(self._read_topic())

    def stable_versions(self, regions: tuple[str, ...]) -> dict[str, int | None]:
        return self._run(self._stable_versions(regions))

    def published_bundle(self, version: int, public_key: Path) -> Bundle:
        """Fetches ``bundle-<version>`` from the object store and verifies it, as edges do."""
        return self._run(self._published_bundle(version, public_key))

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self._run(self._close(), timeout_s=_CLOSE_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CLOSE_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

    def _run(self, question: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Runs ``question`` on the loop's thread and waits for its answer; cancels it if the
        wait ends otherwise (a stop signal)."""
        future = asyncio.run_coroutine_threadsafe(question, self._loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            future.cancel()
            raise

    async def _connect(self) -> None:
        try:
            self._nats = await nats.connect(
                self.nats_url,
                name="proxima-demo",
                connect_timeout=_REQUEST_TIMEOUT_S,
                max_reconnect_attempts=3,
            )
            registry = ModelRegistry(self._nats.jetstream(timeout=_REQUEST_TIMEOUT_S))
            await registry.models_store()
            await registry.rollout_kv()
        except (NatsError, OSError) as exc:
            raise DemoError(f"NATS at {self.nats_url}: {exc!r}") from exc
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka_bootstrap,
            client_id="proxima-demo",
            group_id=None,  # a reader of its own, from the beginning, committing nothing
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            raise DemoError(f"Kafka at {self.kafka_bootstrap}: {exc!r}") from exc
        self._consumer = consumer

    async def _topic_exists(self) -> bool:
        try:
            topics: set[str] = await self._consumer_started().topics()  # all, none made
        except KafkaError as exc:
            raise DemoError(f"Kafka at {self.kafka_bootstrap}: {exc!r}") from exc
        return KAFKA_EVENTS_TOPIC in topics

    def _consumer_started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise DemoError("not connected to Kafka")
        return self._consumer

    async def _stream(self) -> StreamCounts:
        js = self._jetstream()
        try:
            info = await js.stream_info(EVENTS_STREAM, subjects_filter=EVENTS_SUBJECTS)
        except NotFoundError:
            return StreamCounts(0, {})
        except NatsError as exc:
            raise DemoError(f"NATS at {self.nats_url}: {exc!r}") from exc
        return StreamCounts(int(info.state.messages), dict(info.state.subjects or {}))

    async def _read_topic(self) -> TopicCounts:
        consumer = self._consumer_started()
        if not consumer.subscription():
            raise DemoError("the events topic is not being read yet")
        try:
            await self._read_to_end(consumer)
        except KafkaError as exc:
            raise DemoError(f"Kafka at {self.kafka_bootstrap}: {exc!r}") from exc
        return TopicCounts(
            records=self._records,
            distinct=len(self._region_of),
            distinct_by_region=dict(Counter(self._region_of.values())),
        )

    async def _read_to_end(self, consumer: AIOKafkaConsumer) -> None:
        for _ in range(_ASSIGNMENT_POLLS):
            partitions: list[TopicPartition] = sorted(consumer.assignment())
            if partitions:
                break
            await self._poll(consumer)
        else:
            raise DemoError(f"Kafka at {self.kafka_bootstrap} assigned no partition to read")
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        deadline = asyncio.get_running_loop().time() + _READ_TO_END_TIMEOUT_S
        while True:
            positions = [await consumer.position(partition) for partition in partitions]
            if all(at >= ends[tp] for at, tp in zip(positions, partitions, strict=True)):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise DemoError(
                    f"Kafka at {self.kafka_bootstrap} did not deliver {KAFKA_EVENTS_TOPIC} up "
                    f"to its end within {_READ_TO_END_TIMEOUT_S:.0f} s"
                )
            await self._poll(consumer)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batches: dict[Any, list[Any]] = await consumer.getmany(
            timeout_ms=_KAFKA_POLL_MS, max_records=_KAFKA_MAX_RECORDS
        )
        for records in batches.values():
            for record in records:
                self._count(record.value or b"")

    def _count(self, value: bytes) -> None:
        self._records += 1
        try:
            event = decode_msgpack_event(value)
        except ProtocolError:
            return  # not an event; the bridge sends those to the dead-letter topic
        self._region_of[event.event_id] = event.region or "?"

    async def _stable_versions(self, regions: tuple[str, ...]) -> dict[str, int | None]:
        registry = ModelRegistry(self._jetstream())
        stables: dict[str, int | None] = {}
        for region in regions:
            try:
                state = await registry.current_rollout(region)
            except (NatsError, RegistryError) as exc:
                raise DemoError(f"rollout record of {region}: {exc}") from exc
            stables[region] = state.stable if state is not None else None
        return stables

    async def _published_bundle(self, version: int, public_key: Path) -> Bundle:
        try:
            data = await ModelRegistry(self._jetstream()).fetch_bundle(version)
            return read_bundle(data, load_public_key(public_key.read_bytes()))
        except (NatsError, RegistryError, ProtocolError) as exc:
            raise DemoError(f"published bundle {version}: {exc}") from exc

    def _jetstream(self) -> JetStreamContext:
        if self._nats is None:
            raise DemoError("not connected to NATS")
        return self._nats.jetstream(timeout=_REQUEST_TIMEOUT_S)

    async def _close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._nats is not None:
            await self._nats.close()
