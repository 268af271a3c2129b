"""Node telemetry: what this edge did in the last interval, published on the bus.

:class:`TelemetryRecorder` holds the interval in progress; it is fed on the request path
through :class:`edge_node.observe.Observer` (a few list increments per answer), which
records into the Prometheus series at the same time;
:class:`TelemetryPublisher` takes what it gathered every ``telemetry_interval_s`` and
publishes one :class:`~protocol.telemetry.TelemetryReport` on core NATS subject
``telemetry.<region>.<node>``. Telemetry is best effort by design (core NATS, no
JetStream): while the bus is down the recorder keeps accumulating, and the next report that
goes out covers the whole span, so counts are delayed, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from protocol.rollout import Variant
from protocol.subjects import telemetry_subject
from protocol.telemetry import (
    STAGES,
    LatencyHistogram,
    Refused,
    ShadowStats,
    TelemetryReport,
    VariantStats,
)
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, describe_error

log = logging.getLogger("proxima.edge.telemetry")

class TelemetryRecorder:
    """The counts of the interval in progress. Not thread-safe: the event loop feeds it."""

    def __init__(self) -> None:
        self._reset(time.time())

    def _reset(self, now: float) -> None:
        self.since = now
        self.requests = 0
        self.errors = 0
        self.overloaded = 0
        self.stages: dict[str, LatencyHistogram] = {s: LatencyHistogram() for s in STAGES}
        self.variants: dict[str, VariantStats] = {
            "stable": VariantStats(),
            "canary": VariantStats(),
        }
        self.shadow = ShadowStats()
        self.events = {"accepted": 0, "duplicate": 0, "rejected": 0}

    def stage(self, name: str, seconds: float) -> None:
        self.stages[name].observe(seconds)

    def http(self, status: int) -> None:
        self.requests += 1
        if status >= 500 and status != 503:
            self.errors += 1
        elif status in (429, 503):
            self.overloaded += 1

    def answered(self, variant: Variant, version: int, seconds: float) -> None:
        stats = self.variants[variant]
        stats.version = version
        stats.requests += 1
        stats.latency.observe(seconds)

    def failed(self, variant: Variant, version: int) -> None:
        stats = self.variants[variant]
        stats.version = version
        stats.errors += 1

    def variant_feedback(self, variant: Variant, event_type: str, version: int) -> bool:
        """An impression or click of an answer bundle ``version`` gave as ``variant`` (other
        types are ignored); only feedback whose request id verified
        (:mod:`edge_node.feedback`) comes here. An interval speaks for one version of each
        variant: feedback on another version is not counted (False)."""
        stats = self.variants[variant]
        if stats.version is None:
            stats.version = version  # an interval of feedback alone still names its bundle
        elif stats.version != version:
            return False
        if event_type == "impression":
            stats.impressions += 1
        elif event_type == "click":
            stats.clicks += 1
        return True

    def shadow_scored(self, version: int, overlap: float, seconds: float) -> None:
        self.shadow.version = version
        self.shadow.requests += 1
        self.shadow.overlap_sum += overlap
        self.shadow.latency.observe(seconds)

    def shadow_failed(self, version: int) -> None:
        self.shadow.version = version
        self.shadow.requests += 1
        self.shadow.errors += 1

    def counted_events(self, accepted: int, duplicate: int, rejected: int) -> None:
        self.events["accepted"] += accepted
        self.events["duplicate"] += duplicate
        self.events["rejected"] += rejected

    def take(self, report: TelemetryReport) -> TelemetryReport:
        """Moves the interval's counts into ``report`` and starts a new interval."""
        now = time.time()
        report.sent_at_ms = int(now * 1000)
        report.interval_s = max(now - self.since, 0.0)
        report.requests, report.errors, report.overloaded = (
            self.requests,
            self.errors,
            self.overloaded,
        )
        report.stages = {name: h for name, h in self.stages.items() if h.total}
        report.variants = {
            name: v
            for name, v in self.variants.items()
            if v.requests or v.errors or v.impressions or v.clicks
        }
        report.shadow_stats = self.shadow if self.shadow.requests else None
        report.events = dict(self.events)
        self._reset(now)
        return report


StatusReader = Callable[[], dict[str, Any]]


class TelemetryPublisher(BusListener):
    """Publishes the recorder's interval every ``interval_s`` on the live bus connection.

    Without one the recorder keeps accumulating, and the next report covers the whole span.
    """

    def __init__(
        self,
        recorder: TelemetryRecorder,
        bus: BusSupervisor,
        *,
        region: str,
        node: str,
        status: StatusReader,
        interval_s: float = 5.0,
    ) -> None:
        self.recorder = recorder
        self.bus = bus
        self.region = region
        self.node = node
        self.subject = telemetry_subject(region, node)
        self.status = status
        self.interval_s = interval_s
        self.started_at_ms = int(time.time() * 1000)
        self.published = 0
        self._seq = 0
        self._lifecycle = Lifecycle("the telemetry publisher")
        self._connection: BusConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._lifecycle.begin_start()
        self._task = asyncio.create_task(self._run(), name="telemetry")
        self.bus.attach(self)

    async def close(self, timeout_s: float = 10.0) -> None:
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        self.bus.detach(self)
        self._connection = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._lifecycle.finish_close()

    async def bus_connected(self, connection: BusConnection) -> None:
        self._connection = connection

    async def bus_lost(self) -> None:
        self._connection = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            connection = self._connection
            if connection is None or not connection.usable:
                continue  # keep accumulating; the next report covers the whole span
            try:
                await connection.client.publish(self.subject, self.build_report().encode())
                self.published += 1
            except Exception as exc:  # telemetry must never take the edge down
                log.warning("telemetry not published: %s", describe_error(exc))

    def build_report(self) -> TelemetryReport:
        status = self.status()
        self._seq += 1
        report = TelemetryReport(
            region=self.region,
            node=self.node,
            seq=self._seq,
            started_at_ms=self.started_at_ms,
            sent_at_ms=0,
            interval_s=0.0,
            ready=bool(status["ready"]),
            stale=bool(status["stale"]),
            stable=status["stable"],
            canary=status["canary"],
            canary_percent=int(status["canary_percent"]),
            shadow=bool(status["shadow"]),
            refused=tuple(
                Refused(version, refusal.code, refusal.message[:512])
                for version, refusal in status["refused"].items()
            ),
            spool_events=int(status["spool_events"]),
            spool_bytes=int(status["spool_bytes"]),
            publish_lag_s=float(status["publish_lag_s"]),
        )
        return self.recorder.take(report)
