"""The edge's log of its own answers: one served record per answer, into the uplink.

Outcomes are tied to answers centrally (:mod:`central.outcomes.attribution`), so every
answer's record (:mod:`protocol.answers`: items, positions, propensities, variant, bundle)
travels the same at-least-once path as the page's events: spool, JetStream, Kafka, lake.
Writing it must never hold up the answer, so :meth:`AnswerLog.record` only appends to a
bounded buffer and a background task hands the buffer to the uplink in batches. When the
uplink pushes back, the batch waits and is offered again; when the buffer is full, new
records are dropped and counted (``proxima_edge_answer_records_dropped_total``) — the
answer itself is unaffected and the loss is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_node.uplink.errors import UplinkError
from edge_node.uplink.uplink import Uplink
from protocol.answers import ServedAnswer, served_event
from protocol.codec import encode_msgpack
from runtime.service import Lifecycle

log = logging.getLogger("proxima.edge.answers")

FLUSH_INTERVAL_S: Final = 0.05
RETRY_AFTER_S: Final = 0.5


def _event_id() -> str:
    return "ans" + os.urandom(12).hex()


class AnswerLog:
    """Buffers served records (at most ``max_pending``) and submits them in batches."""

    def __init__(
        self,
        uplink: Uplink,
        *,
        region: str,
        node: str,
        max_pending: int = 10_000,
        batch: int = 256,
    ) -> None:
        self.uplink = uplink
        self.region = region
        self.node = node
        self.max_pending = max_pending
        self.batch = batch
        self.recorded = 0
        self.dropped = 0
        self.submitted = 0
        self._pending: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lifecycle = Lifecycle("answer log")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, answer: ServedAnswer) -> None:
        """Queues ``answer``'s record; never blocks, drops (and counts) when full."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        event = dataclasses.replace(
            served_event(answer, _event_id()),
            received_at=int(time.time() * 1000),
            region=self.region,
            node=self.node,
        )
        self._pending.append(encode_msgpack(event))
        self.recorded += 1
        if len(self._pending) >= self.batch:
            self._wake.set()

    async def start(self) -> None:
        self._lifecycle.begin_start()
        self._task = asyncio.create_task(self._run(), name="answer-log")

    async def close(self, timeout_s: float = 10.0) -> None:
        if not self._lifecycle.begin_close():
            return
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._pending:
            log.warning("answer log closed with %d records not handed over", len(self._pending))
        self._lifecycle.finish_close()

    async def flush(self) -> None:
        """Hands everything pending to the uplink now (raises what the uplink raises)."""
        while self._pending:
            chunk = [self._pending[i] for i in range(min(self.batch, len(self._pending)))]
            await self.uplink.submit(chunk)
            for _ in chunk:
                self._pending.popleft()
            self.submitted += len(chunk)

    async def _run(self) -> None:
        closing = self._lifecycle.closing
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                await self.flush()
            except UplinkError as exc:
                if closing.is_set():
                    return
                log.debug("uplink pushed back answer records: %s", exc.message)
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            if closing.is_set():
                return


class AnswerLogCollector(Collector):
    """The answer log's figures, read when ``/metrics`` is scraped."""

    def __init__(self, answers: AnswerLog) -> None:
        self._answers = answers

    def collect(self) -> Iterator[Metric]:
        answers = self._answers
        yield CounterMetricFamily(
            "proxima_edge_answer_records", "Served-answer records queued for the uplink",
            value=float(answers.recorded),
        )  # fmt: skip
        yield CounterMetricFamily(
            "proxima_edge_answer_records_dropped",
            "Served-answer records dropped because the buffer was full",
            value=float(answers.dropped),
        )
        yield GaugeMetricFamily(
            "proxima_edge_answer_records_pending", "Served-answer records waiting for the uplink",
            value=float(answers.pending),
        )  # fmt: skip
