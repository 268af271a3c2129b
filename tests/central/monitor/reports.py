"""Telemetry reports for the monitor's tests, built the way an edge fills them in."""

from __future__ import annotations

from collections.abc import Iterable

from protocol.telemetry import (
    LatencyHistogram,
    Refused,
    ShadowStats,
    TelemetryReport,
    VariantStats,
)

T0 = 1_800_000_000.0  # unix seconds at which the tests' clocks start


def histogram(*seconds: float) -> LatencyHistogram:
    h = LatencyHistogram()
    for value in seconds:
        h.observe(value)
    return h


def repeated(value_s: float, count: int) -> LatencyHistogram:
    return histogram(*([value_s] * count))


def variant(
    version: int | None,
    requests: int = 0,
    *,
    errors: int = 0,
    impressions: int = 0,
    clicks: int = 0,
    latency_s: Iterable[float] = (),
) -> VariantStats:
    return VariantStats(version, requests, errors, impressions, clicks, histogram(*latency_s))


def report(
    *,
    region: str = "eu",
    node: str = "n1",
    seq: int = 1,
    sent_at: float = T0,
    started_at: float = T0 - 3600,
    interval_s: float = 5.0,
    requests: int = 0,
    errors: int = 0,
    overloaded: int = 0,
    stages: dict[str, LatencyHistogram] | None = None,
    variants: dict[str, VariantStats] | None = None,
    shadow_stats: ShadowStats | None = None,
    events: dict[str, int] | None = None,
    stable: int | None = 7,
    canary: int | None = None,
    canary_percent: int = 0,
    shadow: bool = False,
    ready: bool = True,
    stale: bool = False,
    refused: tuple[Refused, ...] = (),
    spool_events: int = 0,
    publish_lag_s: float = 0.0,
) -> TelemetryReport:
    return TelemetryReport(
        region=region,
        node=node,
        seq=seq,
        started_at_ms=int(started_at * 1000),
        sent_at_ms=round(sent_at * 1000),
        interval_s=interval_s,
        ready=ready,
        stale=stale,
        stable=stable,
        canary=canary,
        canary_percent=canary_percent,
        shadow=shadow,
        refused=refused,
        requests=requests,
        errors=errors,
        overloaded=overloaded,
        stages=stages or {},
        variants=variants or {},
        shadow_stats=shadow_stats,
        events=events or {},
        spool_events=spool_events,
        publish_lag_s=publish_lag_s,
    )


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
