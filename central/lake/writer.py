"""The lake writer: every event of the Kafka topic into the lake, exactly once.

A member of a Kafka consumer group (``group_id``), so several writers share the topic's
partitions. Each assigned partition's records are decoded (``protocol.codec``; a record
that is not a valid event is counted, logged with its partition and offset, and skipped)
and held by event day (:class:`~central.lake.buffer.PartitionBuffer`) until the partition
holds ``file_bytes`` or its oldest record is ``roll_interval_s`` old, or all partitions
together hold ``max_buffer_bytes`` (then the largest goes first). It is then committed:
one Parquet file per day, named for the offsets the commit covers, all made visible at
once (:mod:`central.lake.commit`).

The lake, not Kafka, says where to resume: on assignment each partition is sought to the
lake's high-water mark plus one (:mod:`central.lake.offsets`), and a record below what is
held is ignored. The group's committed offset is written after each commit for lag
monitors only. So a writer killed at any moment and started again leaves neither a gap
nor a duplicate: what it had not committed is read again, what it had is not. On
revocation a partition's rows are committed first. At start the writer finishes or drops
the commits a dead process left under way and removes superseded files; every
``maintenance_interval_s`` it applies retention and compacts small files of the
partitions it holds.

A :class:`runtime.service.Service`: :meth:`start` returns once the consumer runs;
:meth:`close` commits what is held within its timeout and stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from central.errors import CentralError
from central.kafka_settings import KafkaSettings
from central.lake.buffer import PartitionBuffer
from central.lake.commit import Stager, recover
from central.lake.layout import LakeLayout, open_lake
from central.lake.maintenance import apply_retention, compact, sweep
from central.lake.names import commit_part
from central.lake.offsets import claim_topic, high_water
from central.lake.tables import Source, to_parquet_bytes, with_source
from central.settings import LakeWriterSettings
from protocol.codec import decode_msgpack_event
from protocol.errors import EventError
from runtime.service import Lifecycle

log = logging.getLogger("proxima.central.lake")

_POLL_TIMEOUT_MS: Final = 200


@dataclass(slots=True)
class LakeWriterStatus:
    consumed: int = 0  # records read from Kafka
    written: int = 0  # rows committed into the lake
    invalid: int = 0  # records that were not valid events, skipped
    duplicates: int = 0  # records below what the lake holds, ignored
    commits: int = 0
    files: int = 0
    compacted: int = 0
    last_error: str | None = None


def commit_buffer(stager: Stager, topic: str, buffer: PartitionBuffer) -> int:
    """Commits what ``buffer`` holds as one file per day; returns the files written."""
    assert buffer.first is not None
    tables = buffer.tables()
    source = Source(topic, buffer.partition, buffer.first, buffer.last)
    commit = stager.begin()
    try:
        for k, (date, table) in enumerate(tables.items(), start=1):
            name = commit_part(buffer.partition, buffer.first, buffer.last, k, len(tables))
            commit.stage(date, name.file_name, to_parquet_bytes(with_source(table, source)))
        commit.finish()
    except BaseException:
        commit.abandon()
        raise
    return len(tables)


class LakeWriter:
    def __init__(
        self, settings: LakeWriterSettings, *, kafka: KafkaSettings | None = None,
        client_id: str = "proxima-lake",
    ) -> None:  # fmt: skip
        """``kafka``, when given, says how to reach Kafka (servers, client id, security);
        without it, ``settings.kafka_bootstrap`` in plain text."""
        self.settings = settings
        self.status = LakeWriterStatus()
        self._kafka = kafka or KafkaSettings.from_bootstrap(
            settings.kafka_bootstrap, topic=settings.topic, dlq_topic=f"{settings.topic}.dlq",
            client_id=client_id,
        )  # fmt: skip
        self._lifecycle = Lifecycle("lake writer")
        self._layout: LakeLayout | None = None
        self._stager: Stager | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._buffers: dict[int, PartitionBuffer] = {}
        self._running: asyncio.Task[None] | None = None
        self._maintained_at = time.monotonic()

    @property
    def layout(self) -> LakeLayout:
        if self._layout is None:
            raise CentralError("start() the lake writer first")
        return self._layout

    async def start(self) -> None:
        self._lifecycle.begin_start()
        settings = self.settings
        try:
            self._layout = await asyncio.to_thread(self._prepare_lake)
            self._stager = Stager(self._layout)
            consumer = AIOKafkaConsumer(
                **self._kafka.consumer_options(),
                group_id=settings.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=settings.max_poll_records,
                session_timeout_ms=int(settings.session_timeout_s * 1000),
                heartbeat_interval_ms=max(100, int(settings.session_timeout_s * 1000 / 4)),
            )
            consumer.subscribe([settings.topic], listener=_Rebalance(self))
            self._consumer = consumer
            await consumer.start()
        except BaseException:
            await self._release(2.0)
            self._lifecycle.start_failed()
            raise
        self._running = asyncio.create_task(self._run(consumer), name="lake-writer")

    def _prepare_lake(self) -> LakeLayout:
        layout = open_lake(self.settings.lake_dir, create=True)
        claim_topic(layout, self.settings.topic)
        recovery = recover(layout)
        swept = sweep(layout)
        if recovery.completed or recovery.dropped or swept:
            log.info(
                "lake %s: finished %d commits under way, dropped %d, removed %d superseded files",
                layout.root, recovery.completed, recovery.dropped, swept,
            )  # fmt: skip
        return layout

    async def wait_stopped(self) -> None:
        running = self._running
        if running is None:
            raise CentralError("start() the lake writer first")
        await asyncio.wait({running})
        if not running.cancelled() and running.exception() is not None:
            raise CentralError(f"the lake writer stopped: {running.exception()!r}")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stops reading, commits what is held within ``timeout_s``, leaves the group."""
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        running = self._running
        if running is not None and not running.done():
            _, unfinished = await asyncio.wait({running}, timeout=timeout_s)
            if unfinished:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        try:
            await asyncio.wait_for(self._commit_all(), max(0.1, deadline - loop.time()))
        except TimeoutError:
            log.warning("held rows not committed in time; they are read again at the next start")
        except Exception as exc:
            log.warning("held rows not committed (%r); they are read again at the next start", exc)
        await self._release(max(0.5, deadline - loop.time()))
        self._lifecycle.finish_close()

    async def _release(self, timeout_s: float) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.stop(), timeout_s)
            except (KafkaError, TimeoutError) as exc:
                log.warning("the Kafka consumer did not stop cleanly: %r", exc)
        stager, self._stager = self._stager, None
        if stager is not None:
            await asyncio.to_thread(stager.close)

    # --- consuming ------------------------------------------------------------------------

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        closing = self._lifecycle.closing
        settings = self.settings
        while not closing.is_set():
            batch = await consumer.getmany(
                timeout_ms=_POLL_TIMEOUT_MS, max_records=settings.max_poll_records
            )
            self._take(batch)
            for buffer in list(self._buffers.values()):
                if buffer.pending and (
                    buffer.bytes >= settings.file_bytes
                    or buffer.age_s() >= settings.roll_interval_s
                ):
                    await self._commit(buffer)
            while sum(b.bytes for b in self._buffers.values()) > settings.max_buffer_bytes:
                await self._commit(max(self._buffers.values(), key=lambda b: b.bytes))
            if time.monotonic() - self._maintained_at >= settings.maintenance_interval_s:
                await self._maintain()

    def _take(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        status = self.status
        for partition, records in batch.items():
            buffer = self._buffers.get(partition.partition)
            for record in records:
                status.consumed += 1
                if buffer is None:
                    continue  # revoked meanwhile: its new owner reads it
                if record.offset < buffer.next_offset:
                    status.duplicates += 1
                    continue
                value = record.value or b""
                try:
                    event = decode_msgpack_event(value)
                except EventError as exc:
                    status.invalid += 1
                    log.warning(
                        "skipped record %s[%d]@%d: %s [%s]",
                        partition.topic, partition.partition, record.offset, exc.message, exc.code,
                    )  # fmt: skip
                    buffer.skip(record.offset)
                    continue
                buffer.add(event, record.offset, len(value))

    async def _commit(self, buffer: PartitionBuffer) -> None:
        if not buffer.pending:
            return
        if buffer.rows:
            assert self._stager is not None
            files = await asyncio.to_thread(
                commit_buffer, self._stager, self.settings.topic, buffer
            )
            self.status.commits += 1
            self.status.files += files
            self.status.written += buffer.rows
        next_offset = buffer.next_offset
        buffer.committed()
        await self._hint(buffer.partition, next_offset)

    async def _commit_all(self) -> None:
        for buffer in list(self._buffers.values()):
            await self._commit(buffer)

    async def _hint(self, partition: int, next_offset: int) -> None:
        """The group's offset, for lag monitors; the lake decides where a writer resumes."""
        consumer = self._consumer
        topic_partition = TopicPartition(self.settings.topic, partition)
        if consumer is None or topic_partition not in consumer.assignment():
            return
        try:
            await consumer.commit({topic_partition: next_offset})
        except KafkaError as exc:
            log.debug("group offset not committed for %s: %r", topic_partition, exc)

    async def _maintain(self) -> None:
        self._maintained_at = time.monotonic()
        assert self._stager is not None
        layout, stager, settings = self.layout, self._stager, self.settings
        held = set(self._buffers)
        try:
            await asyncio.to_thread(apply_retention, layout, settings.retention_days)
            done = await asyncio.to_thread(
                compact, layout, stager, min_files=settings.compact_min_files, partitions=held
            )
        except Exception as exc:  # maintenance failing must not stop the writing
            self.status.last_error = f"maintenance failed: {exc!r}"
            log.exception("lake maintenance failed")
            return
        self.status.compacted += len(done)

    # --- rebalancing ----------------------------------------------------------------------

    async def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        for partition in partitions:
            buffer = self._buffers.get(partition.partition)
            if buffer is None:
                continue
            try:
                await self._commit(buffer)
            except Exception as exc:  # not committed: the new owner reads it again
                log.warning("rows of revoked partition %d dropped: %r", partition.partition, exc)
            self._buffers.pop(partition.partition, None)

    def assigned(self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> None:
        marks = high_water(self.layout)
        resume: dict[int, int] = {}
        for partition in partitions:
            next_offset = marks.get(partition.partition, -1) + 1
            # A synchronous seek: awaiting here lets the fetcher start from the group's
            # position. Below the log start (Kafka's retention) it resets to the earliest.
            consumer.seek(partition, next_offset)
            self._buffers[partition.partition] = PartitionBuffer(partition.partition, next_offset)
            resume[partition.partition] = next_offset
        log.info("lake writer assigned %s; resuming at %s", sorted(resume), resume)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped library
    def __init__(self, writer: LakeWriter) -> None:
        self._writer = writer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._writer.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        consumer = self._writer._consumer
        if consumer is not None:
            self._writer.assigned(consumer, assigned)
