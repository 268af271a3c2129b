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

The monitor starts and keeps running whatever NATS does: its one connection is kept by a
:class:`~runtime.supervisor.BusSupervisor` (named ``proxima-monitor`` by the CLI), which
connects in the background with the product's backoff; the monitor subscribes on every new
connection and counts the reports NATS drops for it from the supervisor's error reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from central.monitor.errors import MonitorError, MonitorSettingsError
from central.monitor.figures import latency_summary
from central.monitor.metrics import MonitorMetrics
from central.monitor.query import LatencyQuery
from central.monitor.store import TelemetryStore
from protocol.subjects import MONITOR_REQUEST_SUBJECT, TELEMETRY_SUBJECTS, telemetry_subject
from protocol.telemetry import (
    TELEMETRY_INTERVAL_S,
    TelemetryError,
    TelemetryReport,
    decode_report,
)
from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor

log = logging.getLogger("proxima.central.monitor")

MONITOR_QUEUE_GROUP: Final = "proxima-monitor"
_BAD_REPORT_LOG_EVERY_S: Final = 10.0

Outcome = Literal["accepted", "duplicate", "malformed", "too_frequent", "region_full"]


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    nats: NatsSettings
    retention_s: float = 900.0
    silent_after_s: float = 3 * TELEMETRY_INTERVAL_S
    max_nodes: int = 10_000
    max_nodes_per_region: int = 1_000  # new names beyond this are refused
    max_bytes: int = 256 << 20  # reports held, by store.report_bytes
    min_report_spacing_s: float = 1.0  # a node's reports closer than this are dropped (0: off)
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
        for name in (
            "max_nodes",
            "max_nodes_per_region",
            "max_bytes",
            "pending_msgs_limit",
            "pending_bytes_limit",
            "ping_interval_s",
        ):
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
    return Ingested(store.add(report, received_at=received_at), report)


class LatencyMonitor(BusListener):
    """A :class:`runtime.service.Service`: :meth:`start` returns at once (it listens once
    connected: :meth:`wait_listening`); :meth:`close` unsubscribes and disconnects."""

    def __init__(
        self, settings: MonitorSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = TelemetryStore(
            retention_s=settings.retention_s,
            silent_after_s=settings.silent_after_s,
            max_nodes=settings.max_nodes,
            max_nodes_per_region=settings.max_nodes_per_region,
            max_bytes=settings.max_bytes,
            min_spacing_s=settings.min_report_spacing_s,
            clock=clock,
        )
        self.metrics = MonitorMetrics(self.store, window_s=settings.metrics_window_s, clock=clock)
        self.registry = self.metrics.registry
        self._clock = clock
        self.bus = BusSupervisor(
            settings.nats,
            ping_interval_s=settings.ping_interval_s,
            backoff=Backoff(
                settings.connect_retry_initial_s,
                settings.connect_retry_max_s,
                stable_after_s=settings.connect_retry_max_s,
            ),
        )
        self._lifecycle = Lifecycle("latency monitor")
        self._connection: BusConnection | None = None
        self._telemetry: Subscription | None = None
        self._listening = asyncio.Event()
        self._last_warning = -math.inf
        self._quiet_warnings = 0
        self.metrics.pending.set_function(self._pending)

    @property
    def listening(self) -> bool:
        """True while subscribed to telemetry over a live connection."""
        return self._listening.is_set()

    async def start(self) -> None:
        self._lifecycle.begin_start()
        self.bus.attach(self)
        await self.bus.start()

    async def wait_listening(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._listening.wait(), timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        await self.bus.close(timeout_s)
        self._lifecycle.finish_close()

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
        connection = self._connection
        limit = connection.client.max_payload if connection is not None else None
        if limit is not None and len(reply) > limit:
            too_big = MonitorError(
                f"the summary is {len(reply)} bytes, over the bus limit of "
                f"{limit}: ask for one region, or without nodes",
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

    async def bus_connected(self, connection: BusConnection) -> None:
        client = connection.client
        telemetry = await client.subscribe(
            self.settings.telemetry_subjects,
            cb=self._on_telemetry,
            pending_msgs_limit=self.settings.pending_msgs_limit,
            pending_bytes_limit=self.settings.pending_bytes_limit,
        )
        try:
            await client.subscribe(
                self.settings.request_subject, queue=MONITOR_QUEUE_GROUP, cb=self._on_request
            )
            await client.flush()
        except BaseException:
            await _unsubscribe(telemetry)
            raise
        self._connection, self._telemetry = connection, telemetry
        self.metrics.connected.set(1)
        self._listening.set()
        log.info("monitor listening on %s", self.settings.telemetry_subjects)

    async def bus_lost(self) -> None:
        self._listening.clear()
        self.metrics.connected.set(0)
        self._connection, self._telemetry = None, None
        if not self._lifecycle.closing.is_set():
            log.warning("monitor lost its NATS connection; reconnecting")

    def bus_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            self.metrics.reports.labels("dropped").inc()
            self._warn("monitor falls behind: NATS dropped a telemetry report")


async def _unsubscribe(subscription: Subscription) -> None:
    try:
        await subscription.unsubscribe()
    except Exception as exc:
        log.debug("unsubscribing failed: %r", exc)
