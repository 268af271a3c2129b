"""The continuous trainer: Kafka events into the event store, then retrain, gate, publish.

One consumer in group ``proxima-trainer`` reads ``proxima.events``. The store is the
source of truth for how far it has read: on assignment each partition is sought to the
offset the store holds (to the beginning when it holds none, so a lost state directory is
rebuilt from what the topic retains), and Kafka offsets are committed only after the store
has flushed the events they cover. A trainer learns from every partition, so run one
trainer per group.

A retrain starts when the consumer has caught up with the topic, the store holds at least
``min_events`` events, and either nothing was trained yet, ``retrain_events`` new events
arrived since the last attempt, or ``retrain_interval_s`` passed with anything new.
Training and the gate run in worker threads while consumption goes on
(:mod:`central.trainer.retrain`). A failed attempt counts as an attempt, so it is retried
on the same schedule rather than at once.

Bundles go to the registry over the trainer's one NATS connection, kept by a
:class:`~runtime.supervisor.BusSupervisor` (named ``proxima-trainer`` by the CLI); what
becomes of a published bundle is the ``on_published`` callback's business (the commands
wire promotion or a canary rollout there). :class:`TrainerService` is a
:class:`runtime.service.Service`: ``start()`` returns once NATS answered and the consumer
runs; ``close(timeout_s)`` stops consuming, lets a training under way finish within the
timeout, and flushes the store and the offsets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from central.errors import CentralError
from central.kafka_settings import KafkaSettings
from central.trainer.eventstore import EventStore, StoreLimits
from central.trainer.gate import MAX_HR_LOSS
from central.trainer.pipeline import TrainerConfig
from central.trainer.retrain import (
    OffPolicyCheck,
    OnPublished,
    RetrainReport,
    RetrainSettings,
    retrain,
)
from protocol.codec import decode_msgpack_event
from protocol.errors import EventError
from protocol.events import Event
from runtime.files import atomic_write_bytes
from runtime.nats import NatsSettings
from runtime.registry import DEFAULT_BUCKETS, KEEP_BUNDLES, Buckets, ModelRegistry
from runtime.service import Lifecycle
from runtime.supervisor import BusSupervisor, redact

GROUP_ID: Final = "proxima-trainer"
STATE_FILE: Final = "trainer-state.json"
EVENTS_DIR: Final = "events"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainerServiceConfig:
    nats: NatsSettings
    kafka: KafkaSettings  # bootstrap servers and the events topic
    state_dir: Path
    private_key_pem: bytes
    regions: tuple[str, ...] = ()  # whose stable bundle candidates are gated against; (): all
    on_published: OnPublished | None = None  # told of each published bundle; None: publish only
    retrain_events: int = 50_000
    retrain_interval_s: float = 6 * 3600.0
    min_events: int = 10_000
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    store_limits: StoreLimits = field(default_factory=StoreLimits)
    max_hr_loss: float = MAX_HR_LOSS
    keep_bundles: int = KEEP_BUNDLES
    group_id: str = GROUP_ID
    buckets: Buckets = DEFAULT_BUCKETS
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    max_poll_records: int = 5_000
    poll_timeout_s: float = 0.5
    flush_interval_s: float = 1.0
    nats_timeout_s: float = 30.0  # for NATS to answer at start, and before publishing
    offpolicy: OffPolicyCheck | None = None  # require the logged answers' verdict too


@dataclass(slots=True)
class TrainerStatus:
    consumed: int = 0  # Kafka records read since the start
    bad_records: int = 0  # records that were not a valid msgpack event
    kept: int = 0  # new item events added to the store since the start
    store_sequence: int = 0  # events the store has ever kept
    caught_up: bool = False
    training: bool = False
    attempts: int = 0  # retrains finished or failed since the start
    last_retrain: RetrainReport | None = None
    published: list[int] = field(default_factory=list)
    last_error: str | None = None


@dataclass(slots=True)
class _TrainingState:
    """What survives a restart besides the events: persisted in ``trainer-state.json``."""

    last_version: int | None = None  # the highest version ever given to a bundle
    attempted_sequence: int = 0  # the store's sequence when training was last attempted
    attempted_at: float | None = None  # Unix time of that attempt

    @classmethod
    def load(cls, path: Path) -> _TrainingState:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(raw["last_version"], int(raw["attempted_sequence"]), raw["attempted_at"])

    def save(self, path: Path) -> None:
        data = {
            "last_version": self.last_version,
            "attempted_sequence": self.attempted_sequence,
            "attempted_at": self.attempted_at,
        }
        atomic_write_bytes(path, json.dumps(data).encode())


class TrainerService:
    def __init__(self, config: TrainerServiceConfig) -> None:
        self.config = config
        self.status = TrainerStatus()
        self._settings = RetrainSettings(
            trainer=config.trainer,
            private_key_pem=config.private_key_pem,
            regions=config.regions,
            max_hr_loss=config.max_hr_loss,
            keep_bundles=config.keep_bundles,
            on_published=config.on_published,
            offpolicy=config.offpolicy,
        )
        self._state_path = config.state_dir / STATE_FILE
        self._state = _TrainingState()
        self._lifecycle = Lifecycle("trainer")
        self.bus = BusSupervisor(config.nats)
        self._store: EventStore | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._consuming: asyncio.Task[None] | None = None
        self._retraining: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Opens the store, connects to NATS (failing now rather than at publishing when it
        does not answer within ``nats_timeout_s``) and starts consuming."""
        self._lifecycle.begin_start()
        config = self.config
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
            self._state = _TrainingState.load(self._state_path)
            store = EventStore.open(config.state_dir / EVENTS_DIR, config.store_limits)
            self._store = store
            self.status.store_sequence = store.sequence
            await self.bus.start()
            await self._registry()
            consumer = AIOKafkaConsumer(
                **config.kafka.consumer_options(),
                group_id=config.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=config.kafka_session_timeout_ms,
                heartbeat_interval_ms=config.kafka_heartbeat_interval_ms,
            )
            consumer.subscribe([config.kafka.topic], listener=_ResumeFromStore(consumer, store))
            self._consumer = consumer
            await consumer.start()
        except BaseException:
            await self._release(2.0)
            if self._lifecycle.begin_close():  # nothing runs: closed at once
                self._lifecycle.finish_close()
            raise
        self._consuming = asyncio.create_task(self._consume(consumer, store), name="trainer")

    async def wait_stopped(self) -> None:
        """Returns once consuming has ended (after :meth:`close`); raises if it failed."""
        consuming = self._consuming
        if consuming is None:
            raise CentralError("start() the trainer first")
        await asyncio.wait({consuming})
        if not consuming.cancelled() and consuming.exception() is not None:
            raise CentralError(f"the trainer stopped: {consuming.exception()!r}")

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stops consuming, lets a training under way finish within ``timeout_s``, then
        flushes the store, commits the offsets and disconnects."""
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for what in ("consuming", "training"):  # the consumer may start one as it stops
            task = self._consuming if what == "consuming" else self._retraining
            if task is None or task.done():
                continue
            if what == "training":
                log.info("waiting for the training under way to finish")
            _, unfinished = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            if unfinished:
                log.warning("%s did not end within %.1f s; cancelled", what, timeout_s)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._release(max(0.5, deadline - loop.time()))
        self._lifecycle.finish_close()

    async def _release(self, timeout_s: float) -> None:
        store, self._store = self._store, None
        consumer, self._consumer = self._consumer, None
        try:
            if store is not None and consumer is not None:
                store.flush()
                await _commit(consumer, store)
            if consumer is not None:
                try:
                    await asyncio.wait_for(consumer.stop(), timeout_s)
                except (KafkaError, TimeoutError) as exc:
                    log.warning("the Kafka consumer did not stop cleanly: %r", exc)
        finally:
            if store is not None:
                store.close()
            await self.bus.close(timeout_s)

    async def _registry(self) -> ModelRegistry:
        """The registry on the live NATS connection, waiting ``nats_timeout_s`` for one."""
        try:
            connection = await self.bus.wait_connected(self.config.nats_timeout_s)
        except TimeoutError:
            servers = redact(",".join(self.config.nats.servers))
            raise CentralError(
                f"NATS at {servers} did not answer within {self.config.nats_timeout_s:g} s: "
                f"{self.bus.status.last_error or 'no connection'}",
                code="nats_unreachable",
            ) from None
        return ModelRegistry(connection.jetstream(), self.config.buckets)

    async def _consume(self, consumer: AIOKafkaConsumer, store: EventStore) -> None:
        config, closing = self.config, self._lifecycle.closing
        flushed_at = time.monotonic()
        while not closing.is_set():
            batch = await consumer.getmany(
                timeout_ms=int(config.poll_timeout_s * 1000), max_records=config.max_poll_records
            )
            events, offsets = self._decoded(batch)
            self.status.kept += store.add(events, offsets)
            self.status.store_sequence = store.sequence
            self.status.caught_up = _caught_up(consumer, store)
            if time.monotonic() - flushed_at >= config.flush_interval_s:
                store.flush()
                await _commit(consumer, store)
                flushed_at = time.monotonic()
            if self._retraining is None and self._retrain_due(store):
                self._retraining = asyncio.create_task(self._retrain(store))

    def _decoded(
        self, batch: Mapping[TopicPartition, Sequence[Any]]
    ) -> tuple[list[Event], dict[str, int]]:
        events: list[Event] = []
        offsets: dict[str, int] = {}
        for partition, records in batch.items():
            for record in records:
                self.status.consumed += 1
                try:
                    events.append(decode_msgpack_event(record.value or b""))
                except EventError as exc:
                    self.status.bad_records += 1
                    log.debug("skipped record %s@%d: %s", partition, record.offset, exc)
            if records:
                offsets[_offset_key(partition)] = records[-1].offset + 1
        return events, offsets

    def _retrain_due(self, store: EventStore) -> bool:
        state, config = self._state, self.config
        new_events = store.sequence - state.attempted_sequence
        if new_events <= 0 or not self.status.caught_up:
            return False
        due = (
            state.attempted_at is None
            or new_events >= config.retrain_events
            or time.time() - state.attempted_at >= config.retrain_interval_s
        )
        return due and len(store) >= config.min_events

    async def _retrain(self, store: EventStore) -> None:
        self.status.training = True
        sequence = store.sequence
        try:
            report = await retrain(
                await self._registry(),
                store.columns(),
                self._settings,
                last_version=self._state.last_version,
            )
        except Exception as exc:  # a failed retrain must not stop the consumer
            log.exception("retrain failed")
            self.status.last_error = f"{type(exc).__name__}: {exc}"
        else:
            log.info("%s", report.summary())
            log.info("gate: %s", json.dumps(report.gate.to_dict()))
            self.status.last_retrain = report
            self.status.last_error = None
            self._state.last_version = report.version
            if report.published:
                self.status.published.append(report.version)
        finally:
            self._state.attempted_sequence = sequence
            self._state.attempted_at = time.time()
            self._state.save(self._state_path)
            self.status.attempts += 1
            self.status.training = False
            self._retraining = None


class _ResumeFromStore(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped library
    """Seeks each assigned partition to the offset the store holds; flushes on revocation."""

    def __init__(self, consumer: AIOKafkaConsumer, store: EventStore) -> None:
        self._consumer = consumer
        self._store = store

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._store.flush()
        await _commit(self._consumer, self._store)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        held = self._store.offsets
        for partition in assigned:
            # Synchronous seeks only: awaiting here lets the fetcher start from the group's
            # position and deliver records twice. An offset below the log start (retention)
            # is reset to the earliest record by ``auto_offset_reset``.
            self._consumer.seek(partition, held.get(_offset_key(partition), 0))
        log.info(
            "assigned %s; resuming at %s",
            sorted(_offset_key(p) for p in assigned),
            {_offset_key(p): held.get(_offset_key(p), "beginning") for p in assigned},
        )


async def _commit(consumer: AIOKafkaConsumer, store: EventStore) -> None:
    """Commits the store's offsets for the assigned partitions (informational: the store,
    not the commit, decides where a restart resumes)."""
    held = store.offsets
    offsets = {
        partition: held[_offset_key(partition)]
        for partition in consumer.assignment()
        if _offset_key(partition) in held
    }
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        log.warning("could not commit offsets %s: %s", offsets, exc)


def _caught_up(consumer: AIOKafkaConsumer, store: EventStore) -> bool:
    """Whether the store holds every record below each assigned partition's high water, as
    the last fetch reported it."""
    assigned = consumer.assignment()
    held = store.offsets
    for partition in assigned:
        highwater = consumer.highwater(partition)
        if highwater is None or held.get(_offset_key(partition), 0) < highwater:
            return False
    return bool(assigned)


def _offset_key(partition: TopicPartition) -> str:
    return f"{partition.topic}:{partition.partition}"
