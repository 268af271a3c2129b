"""Node telemetry: what this edge did in the last interval, published on the bus.

:class:`TelemetryRecorder` is fed on the request path (a few list increments per answer);
:class:`TelemetryPublisher` takes what it gathered every ``telemetry_interval_s`` and
publishes one :class:`~protocol.telemetry.TelemetryReport` on core NATS subject
``telemetry.<region>.<node>``. Telemetry is best effort by design (core NATS, no
JetStream): while the bus is down the recorder keeps accumulating, and the next report that
goes out covers the whole span, so counts are delayed, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from runtime.nats import NatsSettings
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

log = logging.getLogger("proxima.edge.telemetry")

REQUEST_ID_SUFFIX: dict[Variant, str] = {"stable": ".s", "canary": ".c"}
_SUFFIX_VARIANT: dict[str, Variant] = {suffix: v for v, suffix in REQUEST_ID_SUFFIX.items()}


def variant_of_request(request_id: str | None) -> Variant | None:
    """Which variant answered a recommendation, from the ``request_id`` it carried."""
    if not request_id:
        return None
    return _SUFFIX_VARIANT.get(request_id[-2:])


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

    def feedback(self, event_type: str, request_id: str | None) -> None:
        variant = variant_of_request(request_id)
        if variant is None:
            return
        if event_type == "impression":
            self.variants[variant].impressions += 1
        elif event_type == "click":
            self.variants[variant].clicks += 1

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


class TelemetryPublisher:
    """Publishes the recorder's interval every ``interval_s`` while NATS is reachable."""

    def __init__(
        self,
        recorder: TelemetryRecorder,
        nats_settings: NatsSettings,
        *,
        region: str,
        node: str,
        status: StatusReader,
        interval_s: float = 5.0,
    ) -> None:
        self.recorder = recorder
        self.nats_settings = nats_settings
        self.region = region
        self.node = node
        self.subject = telemetry_subject(region, node)
        self.status = status
        self.interval_s = interval_s
        self.started_at_ms = int(time.time() * 1000)
        self.published = 0
        self._seq = 0
        self._client: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                client = await self._connected()
                if client is None:
                    continue  # keep accumulating; the next report covers the whole span
                await client.publish(self.subject, self.build_report().encode())
                self.published += 1
            except Exception as exc:  # telemetry must never take the edge down
                log.warning("telemetry not published: %r", exc)

    async def _connected(self) -> NatsClient | None:
        client = self._client
        if client is not None and client.is_connected:
            return client
        if client is not None and not client.is_closed:
            return None  # reconnecting by itself
        options = self.nats_settings.connect_options()
        options.update(
            name=f"{options.get('name', 'proxima')}-telemetry",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1.0,
            pending_size=1 << 20,
        )
        try:
            self._client = await nats.connect(**options)
        except Exception as exc:
            log.debug("telemetry cannot reach NATS: %r", exc)
            self._client = None
        return self._client

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
