"""The latency monitor: edge telemetry from NATS into a store; figures out on request.

:class:`LatencyMonitor` subscribes ``telemetry.>`` and feeds every valid report into its
:class:`~central.monitor.store.TelemetryStore` (``monitor.store``, which a rollout
controller in the same process reads directly). A report that does not decode, or whose
subject names another node than its body, is counted and logged with the reason (at most
one warning per ``_BAD_REPORT_LOG_EVERY_S``), never raised. The subscription's pending
queue is bounded: when the monitor falls behind, NATS drops what does not fit, and each
drop is counted (``proxima_monitor_reports_total{outcome="dropped"}``).

It answers :class:`~central.monitor.query.LatencyQuery` requests on
``proxima.monitor.latency`` (queue group ``proxima-monitor``: one of several monitors
answers) with the JSON of :func:`~central.monitor.figures.latency_summary`.

The monitor starts and keeps running whatever NATS does: it connects in the background
with capped, jittered backoff, and after a lost connection connects and subscribes afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from central.monitor.errors import MonitorError, MonitorSettingsError
from central.monitor.figures import latency_summary
from central.monitor.metrics import MonitorMetrics
from central.monitor.query import LatencyQuery
from central.monitor.store import TelemetryStore
from runtime.nats import NatsSettings
from protocol.subjects import MONITOR_REQUEST_SUBJECT, TELEMETRY_SUBJECTS, telemetry_subject
from protocol.telemetry import (
    TELEMETRY_INTERVAL_S,
    TelemetryError,
    TelemetryReport,
    decode_report,
)

log = logging.getLogger("proxima.central.monitor")

MONITOR_QUEUE_GROUP: Final = "proxima-monitor"
_BAD_REPORT_LOG_EVERY_S: Final = 10.0

Outcome = Literal["accepted", "duplicate", "malformed"]


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    nats: NatsSettings
    retention_s: float = 900.0
    silent_after_s: float = 3 * TELEMETRY_INTERVAL_S
    max_nodes: int = 10_000
    metrics_window_s: float = 60.0  # the window the Prometheus figures cover
    pending_msgs_limit: int = 10_000  # reports waiting to be processed before NATS drops
    pending_bytes_limit: int = 64 << 20
    connect_retry_initial_s: float = 0.2
    connect_retry_max_s: float = 5.0
    ping_interval_s: int = 10  # how soon a silently dead connection is noticed
    telemetry_subjects: str = TELEMETRY_SUBJECTS
    request_subject: str = MONITOR_REQUEST_SUBJECT

    def __post_init__(self) -> None:
        for name in ("retention_s", "silent_after_s", "metrics_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise MonitorSettingsError(f"{name} must be positive", field=name)
        for name in ("max_nodes", "pending_msgs_limit", "pending_bytes_limit", "ping_interval_s"):
            if getattr(self, name) < 1:
                raise MonitorSettingsError(f"{name} must be at least 1", field=name)
        if not 0 < self.connect_retry_initial_s <= self.connect_retry_max_s:
            raise MonitorSettingsError(
                "connect retries need 0 < initial <= max", field="connect_retry_initial_s"
            )


@dataclass(frozen=True, slots=True)
class Ingested:
    outcome: Outcome
    report: TelemetryReport | None = None  # the report, unless malformed
    reason: str | None = None  # why a malformed report was refused


def ingest(
    store: TelemetryStore, subject: str, data: bytes, *, received_at: float | None = None
) -> Ingested:
    """Decodes one telemetry message into ``store``; never raises for bad input."""
    try:
        report = decode_report(data)
    except TelemetryError as exc:
        where = f" ({exc.field})" if exc.field else ""
        return Ingested("malformed", reason=f"{exc.message}{where}")
    expected = telemetry_subject(report.region, report.node)
    if subject != expected:
        return Ingested(
            "malformed",
            reason=f"report from {report.region}/{report.node} arrived on {subject!r:.120}",
        )
    duplicates = store.duplicates
    store.add(report, received_at=received_at)
    return Ingested("duplicate" if store.duplicates > duplicates else "accepted", report)


class LatencyMonitor:
    def __init__(
        self, settings: MonitorSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = TelemetryStore(
            retention_s=settings.retention_s,
            silent_after_s=settings.silent_after_s,
            max_nodes=settings.max_nodes,
            clock=clock,
        )
        self.metrics = MonitorMetrics(self.store, window_s=settings.metrics_window_s, clock=clock)
        self.registry = self.metrics.registry
        self._clock = clock
        self._client: NatsClient | None = None
        self._telemetry: Subscription | None = None
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_warning = -math.inf
        self._quiet_warnings = 0
        self.metrics.pending.set_function(self._pending)

    @property
    def listening(self) -> bool:
        """True while subscribed to telemetry over a live connection."""
        return self._listening.is_set()

    async def start(self) -> None:
        if self._task is not None:
            raise MonitorError("a monitor starts once")
        self._task = asyncio.create_task(self._stay_connected(), name="latency-monitor")

    async def wait_listening(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._listening.wait(), timeout_s)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._disconnect()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- what arrives ------------------------------------------------------------------

    def on_telemetry(self, subject: str, data: bytes) -> Outcome:
        result = ingest(self.store, subject, data)
        self.metrics.reports.labels(result.outcome).inc()
        if result.outcome == "accepted" and result.report is not None:
            self.metrics.count_report(result.report)
        elif result.reason is not None:
            self._warn(f"bad telemetry on {subject!r:.120}: {result.reason}")
        return result.outcome

    def answer(self, data: bytes) -> bytes:
        """The JSON reply to a latency query, or an error body naming what was wrong."""
        try:
            query = LatencyQuery.decode(data)
            body: dict[str, Any] = latency_summary(
                self.store, query, source="monitor", now=self._clock()
            )
        except MonitorError as exc:
            self.metrics.requests.labels("refused").inc()
            return json.dumps({"error": exc.to_dict()}).encode()
        self.metrics.requests.labels("answered").inc()
        return json.dumps(body).encode()

    async def _on_telemetry(self, msg: Msg) -> None:
        self.on_telemetry(msg.subject, msg.data)

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        reply = self.answer(msg.data)
        client = self._client
        if client is not None and len(reply) > client.max_payload:
            too_big = MonitorError(
                f"the summary is {len(reply)} bytes, over the bus limit of "
                f"{client.max_payload}: ask for one region, or without nodes",
                field="nodes",
            )
            reply = json.dumps({"error": too_big.to_dict()}).encode()
        await msg.respond(reply)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning < _BAD_REPORT_LOG_EVERY_S:
            self._quiet_warnings += 1
            log.debug("%s", message)
            return
        quiet = ""
        if self._quiet_warnings:
            quiet = f" ({self._quiet_warnings} more since the last warning)"
        log.warning("%s%s", message, quiet)
        self._last_warning, self._quiet_warnings = now, 0

    def _pending(self) -> float:
        subscription = self._telemetry
        return float(subscription.pending_msgs) if subscription is not None else 0.0

    # -- the connection ----------------------------------------------------------------

    async def _stay_connected(self) -> None:
        settings = self.settings
        delay = settings.connect_retry_initial_s
        failures = 0
        while True:
            closed = asyncio.Event()
            try:
                await self._connect(closed)
            except Exception as exc:
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "monitor cannot listen to NATS: %r",
                    exc,
                )
                await self._disconnect()
                await _sleep_jittered(delay)
                delay = min(delay * 2, settings.connect_retry_max_s)
                continue
            failures = 0
            connected_at = time.monotonic()
            log.info("monitor listening on %s", settings.telemetry_subjects)
            try:
                await closed.wait()
            finally:
                await self._disconnect()
            log.warning("monitor lost its NATS connection; reconnecting")
            if time.monotonic() - connected_at > settings.connect_retry_max_s:
                delay = settings.connect_retry_initial_s
            await _sleep_jittered(delay)
            delay = min(delay * 2, settings.connect_retry_max_s)

    async def _connect(self, closed: asyncio.Event) -> None:
        async def on_closed() -> None:
            closed.set()

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                self.metrics.reports.labels("dropped").inc()
                self._warn("monitor falls behind: NATS dropped a telemetry report")
            else:
                log.debug("NATS: %r", exc)

        options: dict[str, Any] = self.settings.nats.connect_options()
        # Reconnecting is done here, with backoff and fresh subscriptions, not in the client.
        options.update(
            allow_reconnect=False,
            max_reconnect_attempts=1,
            ping_interval=self.settings.ping_interval_s,
            closed_cb=on_closed,
            disconnected_cb=on_closed,
            error_cb=on_error,
        )
        client = await nats.connect(**options)
        self._client = client
        self._telemetry = await client.subscribe(
            self.settings.telemetry_subjects,
            cb=self._on_telemetry,
            pending_msgs_limit=self.settings.pending_msgs_limit,
            pending_bytes_limit=self.settings.pending_bytes_limit,
        )
        await client.subscribe(
            self.settings.request_subject, queue=MONITOR_QUEUE_GROUP, cb=self._on_request
        )
        await client.flush()
        self.metrics.connected.set(1)
        self._listening.set()

    async def _disconnect(self) -> None:
        self._listening.clear()
        self.metrics.connected.set(0)
        client, self._client, self._telemetry = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


async def _sleep_jittered(delay: float) -> None:
    await asyncio.sleep(random.uniform(delay / 2, delay))
