"""The bridge: every event in the EVENTS JetStream stream into the Kafka topic, at least once.

A durable pull consumer hands out batches (:mod:`central.bridge_jetstream`). Each message is
decoded with :func:`protocol.codec.decode_msgpack_event`; a valid event is produced to the
events topic keyed by its session id (so a session stays in one partition, in order), with
its original msgpack bytes as the value and an ``event_id`` header. A message that is not a
valid event goes byte for byte to the dead-letter topic and is then terminated, so it never
blocks the stream (:mod:`central.bridge_forward`).

A JetStream message is acknowledged only after Kafka acknowledged its record (``acks=all``).
When Kafka fails, the failed records are produced again, in their original order, with a
capped backoff, and their messages are kept alive with in-progress acks meanwhile; nothing
is acknowledged before Kafka has it, so a crash at any point loses nothing but may write an
event twice: consumers dedupe by ``event_id``.

The bridge holds one NATS connection, kept by a :class:`~runtime.supervisor.BusSupervisor`
(named ``proxima-bridge`` by the CLI). On every new connection it makes sure the stream and
its durable consumer exist and pulls through a new puller there; when the connection is
lost it forgets the puller and the messages prefetched on it (they are handed back on the
next connection), while the batches already sent go on settling with Kafka and are
acknowledged on whichever connection is live. The consumer lives in the stream's file
storage and survives server restarts. While one batch goes to Kafka, the next is already
being pulled (:class:`central.bridge_jetstream.BatchPuller`).

Ordering: a session's events reach its partition in stream order, also across Kafka
failures, since a batch is settled (retries included) before the next one is sent and each
partition's share of a batch travels as one Kafka record batch (unless it exceeds
``max_batch_bytes``). After a crash, the messages the dead bridge held come back once their
``ack_wait`` has passed, possibly after later events of their sessions; consumers that need
strict order sort by ``ts``. ``pipeline_depth`` > 1 keeps that many batches in flight at
once, overlapping Kafka's answer to one with sending the next, but a record retried after a
Kafka failure may then land after a later event of its session. On a quiet 2-core machine
depth 2 was 5-9 % faster with batches of 100-500 and no faster from 1,000 up
(``bench/pipeline_bridge.py --depth 1 2``): the bridge is CPU-bound, not waiting on Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownError, UnsupportedVersionError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from central.bridge_forward import Counters, Forwarder, release
from central.bridge_jetstream import BatchPuller, StreamLimits, ensure_consumer, ensure_stream
from central.errors import CentralError
from central.kafka_settings import KafkaSettings, ensure_topics
from protocol.subjects import EVENTS_STREAM, EVENTS_SUBJECTS
from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, redact

log = logging.getLogger("proxima.central.bridge")

_IDLE_PULL_S: Final = 1.0  # nothing in flight: wait this long for messages
_PIPELINED_PULL_S: Final = 0.005  # batches in flight: settle them rather than wait longer
_TOPIC_CHECK_TIMEOUT_S: Final = 5.0
_FIRST_PULL_RETRY_S: Final = 0.1


class BridgeError(CentralError):
    code = "bridge_failed"


class BridgeSettingsError(BridgeError):
    code = "bad_bridge_settings"


class IdempotenceUnsupportedError(BridgeError):
    """The broker refused InitProducerId (Tansu does, with UnknownError)."""

    code = "kafka_idempotence_unsupported"


@dataclass(frozen=True, slots=True)
class BridgeStatus:
    forwarded: int  # records Kafka acknowledged in the events topic
    dead_lettered: int  # messages that were not valid events, written to the dead-letter topic
    acked: int  # JetStream messages acknowledged (or terminated) after Kafka had them
    errors: int  # failed pulls, produce rounds and acknowledgements
    lag: int | None  # consumer's num_pending + num_ack_pending at the last check
    last_error: str | None
    running: bool


class Bridge(BusListener):
    """Forwards the ``stream`` into ``kafka.topic`` through the durable consumer ``durable``.

    A :class:`runtime.service.Service`: :meth:`start` returns once the stream, the consumer,
    the topics and the producer are ready and forwarding runs (or raises why they are not
    within ``start_timeout_s``); :meth:`close` lets the batches in hand settle within its
    timeout and disconnects. ``async with Bridge(...)`` does both. Bridges sharing a durable
    name share the work.
    """

    def __init__(
        self,
        nats: NatsSettings,
        kafka: KafkaSettings,
        *,
        durable: str = "proxima-bridge",
        batch: int = 500,
        partitions: int = 6,
        idempotent: bool = True,
        stream: str = EVENTS_STREAM,
        subjects: Sequence[str] = (EVENTS_SUBJECTS,),
        ack_wait_s: float = 60.0,
        max_ack_pending: int | None = None,
        max_backoff_s: float = 5.0,
        lag_interval_s: float = 1.0,
        pipeline_depth: int = 1,
        start_timeout_s: float = 30.0,
        stream_limits: StreamLimits | None = None,
    ) -> None:
        if batch < 1 or partitions < 1 or pipeline_depth < 1:
            raise BridgeSettingsError("batch, partitions and pipeline_depth must be at least 1")
        if ack_wait_s < 1.0 or min(max_backoff_s, lag_interval_s, start_timeout_s) <= 0:
            raise BridgeSettingsError(
                "ack_wait_s must be >= 1; max_backoff_s, lag_interval_s, start_timeout_s > 0"
            )
        self._nats_settings = nats
        self._kafka_settings = kafka
        self._durable = durable
        self._batch = batch
        self._partitions = partitions
        self._idempotent = idempotent
        self._stream = stream
        self._subjects = tuple(subjects)
        self._stream_limits = stream_limits
        self._ack_wait_s = ack_wait_s
        # In hand at once: the batches in flight plus one prefetched.
        self._max_ack_pending = max_ack_pending or max(2 * (pipeline_depth + 1) * batch, 1_000)
        if self._max_ack_pending < batch:
            raise BridgeSettingsError("max_ack_pending must be at least batch")
        self._pipeline_depth = pipeline_depth
        self._max_backoff_s = max_backoff_s
        self._lag_interval_s = lag_interval_s
        self._start_timeout_s = start_timeout_s

        self._bus = BusSupervisor(nats, backoff=Backoff(0.2, max(0.2, max_backoff_s)))
        self._lifecycle = Lifecycle("bridge")
        self._jetstream: JetStreamContext | None = None  # of the live, prepared connection
        self._puller: BatchPuller | None = None  # pulls on the live, prepared connection
        self._to_release: list[Msg] = []  # prefetched on a lost connection: hand back
        self._changed = asyncio.Event()  # a connection came or went, or closing began
        self._producer: Any = None  # AIOKafkaProducer
        self._forwarder: Forwarder | None = None
        self._forwarding: asyncio.Task[None] | None = None
        self._lag_watch: asyncio.Task[None] | None = None

        self._counters = Counters()
        self._lag: int | None = None

    @property
    def status(self) -> BridgeStatus:
        counters = self._counters
        return BridgeStatus(
            forwarded=counters.forwarded,
            dead_lettered=counters.dead_lettered,
            acked=counters.acked,
            errors=counters.errors,
            lag=self._lag,
            last_error=counters.last_error,
            running=self._forwarding is not None and not self._forwarding.done(),
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connects, creates the stream, consumer and topics if absent, starts forwarding."""
        self._lifecycle.begin_start()
        try:
            self._bus.attach(self)
            await self._bus.start()
            await self._wait_prepared()
            await self._start_kafka()
            self._forwarder = Forwarder(
                self._producer, self._kafka_settings, self._counters,
                bus=self._live_client,
                stopping=self._lifecycle.closing,
                keep_alive_every_s=self._ack_wait_s / 3,
                max_backoff_s=self._max_backoff_s,
                buffered=self._buffered,
                after_failure=self._restore_topics,
            )  # fmt: skip
        except BaseException:
            await self.close(timeout_s=2.0)
            raise
        self._forwarding = asyncio.create_task(self._forward_loop(), name="bridge-forward")
        self._lag_watch = asyncio.create_task(self._watch_lag(), name="bridge-lag")

    async def wait_stopped(self) -> None:
        """Returns once forwarding has ended (after :meth:`close`); raises if it failed."""
        forwarding = self._forwarding
        if forwarding is None:
            raise BridgeError("start() the bridge first")
        await asyncio.wait({forwarding})
        if not forwarding.cancelled() and forwarding.exception() is not None:
            raise BridgeError(f"forwarding stopped: {forwarding.exception()!r}")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stops forwarding (the batches in hand get ``timeout_s`` to settle), then disconnects.

        Messages not yet acknowledged are released or left to expire: JetStream redelivers them.
        """
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._changed.set()
        if self._puller is not None:
            self._puller.wake()
        forwarding = self._forwarding
        if forwarding is not None and not forwarding.done():
            _, unfinished = await asyncio.wait({forwarding}, timeout=timeout_s)
            if unfinished:
                log.warning(
                    "batches in hand did not settle in %.1f s; JetStream redelivers them", timeout_s
                )
                forwarding.cancel()
                await asyncio.wait({forwarding})
        if self._lag_watch is not None:
            self._lag_watch.cancel()
            await asyncio.wait({self._lag_watch})
        puller, self._puller = self._puller, None
        if puller is not None:
            self._to_release.extend(await puller.stop())
        held, self._to_release = self._to_release, []
        await release(self._live_client(), held)
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await asyncio.wait_for(producer.stop(), max(0.1, deadline - loop.time()))
            except (KafkaError, TimeoutError) as exc:
                log.warning("Kafka producer did not stop cleanly: %r", exc)
        await self._bus.close(max(0.1, deadline - loop.time()))  # flushes the acknowledgements
        self._lifecycle.finish_close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def refresh_lag(self) -> int | None:
        """Asks JetStream for the consumer's backlog now; None when it cannot be reached."""
        if self._jetstream is None:
            return None
        try:
            info = await self._jetstream.consumer_info(self._stream, self._durable, timeout=2.0)
        except Exception as exc:
            log.debug("consumer info unavailable: %r", exc)
            return None
        self._lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
        return self._lag

    # --- the connection ------------------------------------------------------------------

    async def bus_connected(self, connection: BusConnection) -> None:
        """Prepares the stream and consumer on a new connection and pulls there."""
        jetstream = connection.jetstream()
        await self._prepare_jetstream(jetstream)
        puller = BatchPuller(connection.client, self._stream, self._durable, batch=self._batch)
        await puller.start()
        held, self._to_release = self._to_release, []
        await release(connection.client, held)
        self._jetstream, self._puller = jetstream, puller
        self._changed.set()

    async def bus_lost(self) -> None:
        puller, self._puller, self._jetstream = self._puller, None, None
        if puller is not None:
            self._to_release.extend(puller.abandon())
        self._changed.set()
        if not self._lifecycle.closing.is_set():
            log.warning("NATS connection lost; the bridge pulls again once it is back")

    def _live_client(self) -> NatsClient | None:
        connection = self._bus.connection
        return connection.client if connection is not None else None

    def _buffered(self) -> Sequence[Msg]:
        puller = self._puller
        return puller.buffered if puller is not None else ()

    async def _wait_prepared(self) -> None:
        """Until a connection is up with the stream and consumer; BridgeError after the
        start timeout, naming the last thing that went wrong."""
        try:
            async with asyncio.timeout(self._start_timeout_s):
                while self._puller is None:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            servers = redact(", ".join(self._nats_settings.servers))
            raise BridgeError(
                f"cannot use NATS at {servers} within {self._start_timeout_s:.0f} s: "
                f"{self._bus.status.last_error or 'no connection'}"
            ) from None

    async def _prepare_jetstream(self, jetstream: JetStreamContext) -> None:
        try:
            await ensure_stream(jetstream, self._stream, self._subjects, self._stream_limits)
            await ensure_consumer(
                jetstream, self._stream, self._durable,
                ack_wait_s=self._ack_wait_s, max_ack_pending=self._max_ack_pending,
            )  # fmt: skip
        except Exception as exc:
            raise BridgeError(f"cannot set up stream {self._stream}: {exc!r}") from exc

    async def _start_kafka(self) -> None:
        await ensure_topics(self._kafka_settings, partitions=self._partitions)
        producer = AIOKafkaProducer(
            **self._kafka_settings.producer_options(idempotent=self._idempotent)
        )
        try:
            await producer.start()
        except (UnknownError, UnsupportedVersionError) as exc:
            await producer.stop()
            if not self._idempotent:
                raise BridgeError(f"Kafka producer did not start: {exc!r}") from exc
            raise IdempotenceUnsupportedError(
                f"the Kafka broker at {','.join(self._kafka_settings.bootstrap_servers)} refused "
                f"to start an idempotent producer (InitProducerId failed: {type(exc).__name__}); "
                "brokers without idempotent producers, such as Tansu, need --no-idempotence"
            ) from exc
        except KafkaError as exc:
            await producer.stop()
            raise BridgeError(f"Kafka producer did not start: {exc!r}") from exc
        self._producer = producer

    # --- forwarding ----------------------------------------------------------------------

    async def _forward_loop(self) -> None:
        """Pull, send, and settle the oldest batch once ``pipeline_depth`` are in flight (or
        nothing more arrived). Without a connection, settle what is in flight and wait."""
        assert self._forwarder is not None
        forwarder, closing = self._forwarder, self._lifecycle.closing
        backoff = Backoff(min(_FIRST_PULL_RETRY_S, self._max_backoff_s), self._max_backoff_s)
        while not closing.is_set():
            self._changed.clear()
            puller = self._puller
            if puller is None:
                while forwarder.batches_in_flight:
                    await forwarder.settle_oldest()
                if self._puller is None and not closing.is_set():
                    await self._changed.wait()
                continue
            try:
                in_flight = forwarder.batches_in_flight
                messages = await puller.next_batch(_PIPELINED_PULL_S if in_flight else _IDLE_PULL_S)
            except Exception as exc:
                self._counters.note_error(f"pull failed: {exc!r}")
                while forwarder.batches_in_flight:
                    await forwarder.settle_oldest()
                if not await backoff.sleep(closing):
                    break
                await self._restore_consumer()
                continue
            backoff.reset()
            if messages:
                await forwarder.submit(messages)
            while forwarder.batches_in_flight and (
                forwarder.batches_in_flight >= self._pipeline_depth or not messages
            ):
                await forwarder.settle_oldest()
        while forwarder.batches_in_flight:  # stopping: what Kafka takes in time is acknowledged
            await forwarder.settle_oldest()

    # --- recovery ------------------------------------------------------------------------

    async def _restore_consumer(self) -> None:
        """After failed pulls: the stream or consumer may have been deleted; recreate them."""
        if self._jetstream is None or self._lifecycle.closing.is_set():
            return
        try:
            await self._prepare_jetstream(self._jetstream)
        except BridgeError as exc:
            log.debug("consumer not restored yet: %s", exc)

    async def _restore_topics(self) -> None:
        """After failed produces: a rebuilt or wiped cluster may have lost the topics."""
        try:
            await asyncio.wait_for(
                ensure_topics(self._kafka_settings, partitions=self._partitions),
                _TOPIC_CHECK_TIMEOUT_S,
            )
        except Exception as exc:
            log.debug("topics not checked: %r", exc)

    async def _watch_lag(self) -> None:
        while True:
            await self.refresh_lag()
            await asyncio.sleep(self._lag_interval_s)
