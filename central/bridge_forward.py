"""The Kafka side of the bridge: messages in, records produced, messages acknowledged after.

A :class:`Forwarder` turns each JetStream message into a record (a valid event for the
events topic, anything else byte for byte for the dead-letter topic), sends a batch to the
producer without waiting, and later *settles* it: waits until Kafka has answered for every
record, acknowledges the messages whose records Kafka took, and produces the failed ones
again, in their original order, with the product's :class:`~runtime.backoff.Backoff`, until
Kafka takes them or a stop is requested (then they are handed back to JetStream). While it
waits, in-progress acks keep every message in hand from reaching ``ack_wait``.

Messages are answered (acknowledged, terminated, kept alive, handed back) on the bridge's
*live* NATS connection, which ``bus`` gives, not on the one that delivered them: an answer
is a publish to the message's reply subject, which JetStream takes from any connection, so
what Kafka took while the connection was replaced is still acknowledged once a new one is
up. Without a connection an answer fails and JetStream redelivers the message after its
``ack_wait``: Kafka may then get it twice, never not at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from central.kafka_settings import KafkaSettings
from protocol.codec import decode_msgpack_event
from protocol.errors import EventError
from runtime.backoff import Backoff

log = logging.getLogger("proxima.central.bridge")

EVENT_ID_HEADER: Final = "event_id"
MAX_DEAD_LETTER_BYTES: Final = 512 * 1024  # a larger raw message is cut to fit in one record
_FIRST_BACKOFF_S: Final = 0.1
# What a JetStream message's reply subject takes (nats.aio.msg.Msg.Ack).
ACK: Final = b"+ACK"
TERM: Final = b"+TERM"
NAK: Final = b"-NAK"
IN_PROGRESS: Final = b"+WPI"

LiveClient = Callable[[], NatsClient | None]


@dataclass(slots=True)
class Counters:
    forwarded: int = 0  # records Kafka acknowledged in the events topic
    dead_lettered: int = 0  # invalid messages Kafka acknowledged in the dead-letter topic
    acked: int = 0  # JetStream messages acknowledged (or terminated) after Kafka had them
    errors: int = 0  # failed pulls, produce rounds and acknowledgements
    last_error: str | None = None

    def note_error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.warning("%s", message)


@dataclass(frozen=True, slots=True)
class Record:
    message: Msg
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    dead_letter: bool


@dataclass(slots=True)
class _InFlight:
    records: list[Record]
    futures: list[asyncio.Future[Any] | None]  # one per record (shared per Kafka batch)
    send_error: BaseException | None = None  # why a record has no future: it was not sent


def record_for(message: Msg, settings: KafkaSettings) -> Record:
    try:
        event = decode_msgpack_event(message.data)
    except EventError as exc:
        return _dead_letter_record(message, exc, settings.dlq_topic)
    return Record(
        message=message,
        topic=settings.topic,
        key=event.session_id.encode(),
        value=message.data,
        headers=[(EVENT_ID_HEADER, event.event_id.encode())],
        dead_letter=False,
    )


def _dead_letter_record(message: Msg, error: EventError, topic: str) -> Record:
    sequence = message.metadata.sequence.stream
    log.warning(
        "dead-lettering stream message %d on %s: %s [%s]",
        sequence, message.subject, error.message, error.code,
    )  # fmt: skip
    headers = [
        ("error_code", error.code.encode()),
        ("error", error.message.encode()),
        ("subject", message.subject.encode()),
        ("stream_sequence", str(sequence).encode()),
    ]
    value = message.data
    if len(value) > MAX_DEAD_LETTER_BYTES:
        headers.append(("truncated_from", str(len(value)).encode()))
        value = value[:MAX_DEAD_LETTER_BYTES]
    return Record(message, topic, None, value, headers, dead_letter=True)


class Forwarder:
    """Batches in flight to Kafka, settled oldest first. ``producer`` is a started
    ``AIOKafkaProducer``; ``bus`` gives the live NATS client (None while there is none);
    ``buffered`` gives the prefetched messages to keep alive too; ``after_failure`` runs
    before each retry (to recreate lost topics, say)."""

    def __init__(
        self,
        producer: Any,
        settings: KafkaSettings,
        counters: Counters,
        *,
        bus: LiveClient,
        stopping: asyncio.Event,
        keep_alive_every_s: float,
        max_backoff_s: float,
        buffered: Callable[[], Sequence[Msg]],
        after_failure: Callable[[], Awaitable[None]],
    ) -> None:
        self._producer = producer
        self._settings = settings
        self._counters = counters
        self._bus = bus
        self._stopping = stopping
        self._keep_alive_every_s = keep_alive_every_s
        self._max_backoff_s = max_backoff_s
        self._buffered = buffered
        self._after_failure = after_failure
        self._in_flight: deque[_InFlight] = deque()
        self._partitioner = _Partitioner(producer)

    @property
    def batches_in_flight(self) -> int:
        return len(self._in_flight)

    async def submit(self, messages: Sequence[Msg]) -> None:
        """Sends a batch to the producer; it is acknowledged when :meth:`settle_oldest` runs."""
        records = [record_for(message, self._settings) for message in messages]
        self._in_flight.append(await self._send(records))

    async def settle_oldest(self) -> None:
        """Returns once Kafka has every record of the oldest batch, or a stop gave them back."""
        batch = self._in_flight[0]
        try:
            delivered, failed, error = await self._outcome(batch)
            await self._acknowledge(delivered)
            backoff = Backoff(min(_FIRST_BACKOFF_S, self._max_backoff_s), self._max_backoff_s)
            while failed:
                self._counters.note_error(f"Kafka did not take {len(failed)} records: {error!r}")
                if not self._stopping.is_set():
                    await self._keep_alive(record.message for record in failed)
                if self._stopping.is_set() or not await backoff.sleep(self._stopping):
                    await release(self._bus(), (record.message for record in failed))
                    return
                await self._after_failure()
                delivered, failed, error = await self._outcome(await self._send(failed))
                await self._acknowledge(delivered)
        finally:
            self._in_flight.popleft()

    async def _send(self, records: list[Record]) -> _InFlight:
        """Fills one Kafka record batch per partition (in record order) and queues them all.

        Partitions are chosen as ``producer.send`` chooses them (murmur2 of the key), but
        building whole batches costs about half the CPU of one ``send`` per record.
        """
        batch = _InFlight(records, [None] * len(records))
        builders: list[tuple[str, int, Any, list[int]]] = []  # topic, partition, builder, rows
        open_builders: dict[tuple[str, int], int] = {}
        known_topics: dict[str, bool] = {}
        for row, record in enumerate(records):
            if record.topic not in known_topics:
                try:
                    await self._partitioner.refresh(record.topic)
                    known_topics[record.topic] = True
                except KafkaError as exc:  # no metadata for the topic: these wait for a retry
                    known_topics[record.topic] = False
                    batch.send_error = exc
            if not known_topics[record.topic]:
                continue
            partition = self._partitioner.partition_of(record.topic, record.key)
            slot = open_builders.get((record.topic, partition))
            if slot is None or not self._append(builders[slot][2], record):
                builder = self._producer.create_batch()
                self._append(builder, record)  # an empty batch always takes one record
                slot = open_builders[(record.topic, partition)] = len(builders)
                builders.append((record.topic, partition, builder, []))
            builders[slot][3].append(row)
        for topic, partition, builder, rows in builders:
            try:
                future = await self._producer.send_batch(builder, topic, partition=partition)
            except KafkaError as exc:
                batch.send_error = exc
                continue
            for row in rows:
                batch.futures[row] = future
        return batch

    @staticmethod
    def _append(builder: Any, record: Record) -> bool:
        appended = builder.append(
            timestamp=None, key=record.key, value=record.value, headers=record.headers
        )
        return appended is not None

    async def _outcome(
        self, batch: _InFlight
    ) -> tuple[list[Record], list[Record], BaseException | None]:
        """Waits for Kafka; returns (taken, failed in their original order, an error)."""
        waiting = {future for future in batch.futures if future is not None}
        while waiting:
            _, waiting = await asyncio.wait(waiting, timeout=self._keep_alive_every_s)
            if waiting:
                await self._keep_alive(record.message for record in batch.records)
        delivered: list[Record] = []
        failed: list[Record] = []
        error = batch.send_error
        for record, future in zip(batch.records, batch.futures, strict=True):
            if future is None:
                failed.append(record)
                continue
            problem = asyncio.CancelledError() if future.cancelled() else future.exception()
            if problem is None:
                delivered.append(record)
            else:
                failed.append(record)
                error = problem
        return delivered, failed, error

    async def _acknowledge(self, records: Iterable[Record]) -> None:
        counters = self._counters
        client = self._bus()
        problem: BaseException | None = None
        for record in records:
            if record.dead_letter:
                counters.dead_lettered += 1
            else:
                counters.forwarded += 1
            try:
                await _answer(client, record.message, TERM if record.dead_letter else ACK)
            except Exception as exc:  # JetStream redelivers it: Kafka gets it twice
                problem = exc
                counters.errors += 1
            else:
                counters.acked += 1
        if problem is not None:
            counters.last_error = f"acknowledgement failed: {problem!r}"
            log.warning("%s", counters.last_error)

    async def _keep_alive(self, settling: Iterable[Msg]) -> None:
        """In-progress acks restart ack_wait for the messages of the batch being settled, the
        batches sent after it and the prefetched ones: every message this process holds."""
        later = [record.message for batch in list(self._in_flight)[1:] for record in batch.records]
        client = self._bus()
        if client is None:
            return
        for message in (*settling, *later, *self._buffered()):
            try:
                await _answer(client, message, IN_PROGRESS)
            except Exception:
                return  # the connection went: nothing more gets through it


async def release(client: NatsClient | None, messages: Iterable[Msg]) -> None:
    """Hands messages back to JetStream for immediate redelivery (to this or another bridge);
    without a connection they come back once their ``ack_wait`` has passed."""
    if client is None:
        return
    for message in messages:
        try:
            await _answer(client, message, NAK)
        except Exception:
            return


class _NoConnectionError(ConnectionError):
    """No live NATS connection to answer a message on (the caller counts it)."""


async def _answer(client: NatsClient | None, message: Msg, token: bytes) -> None:
    if client is None:
        raise _NoConnectionError("no NATS connection")
    if message.reply:
        await client.publish(message.reply, token)


class _Partitioner:
    """Partition of a key, as the producer's default partitioner picks it, remembered per key:
    a session sends many events, and murmur2 is pure Python in aiokafka."""

    def __init__(self, producer: Any, *, remembered_keys: int = 200_000) -> None:
        self._producer = producer
        self._pick = DefaultPartitioner()
        self._remembered_keys = remembered_keys
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes], int] = {}

    async def refresh(self, topic: str) -> None:
        """Reads the topic's partitions from the producer's metadata (once per batch)."""
        partitions = sorted(await self._producer.partitions_for(topic))
        if partitions != self._partitions.get(topic):  # first use, or the topic grew
            self._partitions[topic] = partitions
            self._by_key.clear()

    def partition_of(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions[topic]
        if key is None:
            return int(self._pick(None, partitions, partitions))
        remembered = self._by_key.get((topic, key))
        if remembered is None:
            if len(self._by_key) >= self._remembered_keys:
                self._by_key.clear()
            remembered = self._by_key[(topic, key)] = int(self._pick(key, partitions, partitions))
        return remembered
