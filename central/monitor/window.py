"""What a window of reports adds up to: :class:`WindowSummary`, built by the store.

Reports carry counts for their own interval only and latency histograms on one shared
bucket layout, so a window is plain sums and exact histogram merges; nothing stored is
changed by summarising it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from central.monitor.errors import MonitorQueryError
from protocol.telemetry import (
    STAGES,
    VARIANTS,
    LatencyHistogram,
    Refused,
    ShadowStats,
    TelemetryReport,
    VariantStats,
)


@dataclass(slots=True)
class WindowSummary:
    """Everything a region (or one of its nodes) reported in (since, until], merged."""

    region: str
    node: str | None  # None: every node of the region
    since: float
    until: float
    reports: int
    nodes: tuple[str, ...]  # the nodes with at least one report in the window
    span_s: float  # seconds covered: the union of the reports' intervals
    requests: int
    errors: int
    overloaded: int
    stages: dict[str, LatencyHistogram]
    events: dict[str, int]
    _reports: tuple[TelemetryReport, ...] = field(default=(), repr=False, compare=False)

    def variant(self, name: str, version: int | None = None) -> VariantStats:
        """``name``'s stats merged over the window; with ``version``, only the intervals in
        which that variant was that version. ``version`` of the result is the one asked for,
        else the single version seen, else None."""
        if name not in VARIANTS:
            raise MonitorQueryError(f"unknown variant {name!r:.40}", field="variant")
        picked = [
            stats
            for report in self._reports
            if (stats := report.variants.get(name)) is not None
            and (version is None or stats.version == version)
        ]
        return VariantStats(
            version=_version_of(picked, version),
            requests=sum(s.requests for s in picked),
            errors=sum(s.errors for s in picked),
            impressions=sum(s.impressions for s in picked),
            clicks=sum(s.clicks for s in picked),
            latency=merged([s.latency for s in picked]),
        )

    def shadow(self, version: int | None = None) -> ShadowStats:
        """The shadow canary's stats merged over the window (only ``version``'s, if given)."""
        picked = [
            stats
            for report in self._reports
            if (stats := report.shadow_stats) is not None
            and (version is None or stats.version == version)
        ]
        return ShadowStats(
            version=_version_of(picked, version),
            requests=sum(s.requests for s in picked),
            errors=sum(s.errors for s in picked),
            overlap_sum=math.fsum(s.overlap_sum for s in picked),
            latency=merged([s.latency for s in picked]),
        )

    def refusals(self, version: int | None = None) -> list[tuple[str, Refused]]:
        """(node, refusal) for each node whose latest report in the window lists ``version``
        (any version, if None) as refused."""
        latest: dict[str, TelemetryReport] = {}
        for report in self._reports:
            held = latest.get(report.node)
            if held is None or _order(report) >= _order(held):
                latest[report.node] = report
        return [
            (node, refusal)
            for node, report in sorted(latest.items())
            for refusal in report.refused
            if version is None or refusal.version == version
        ]

    def quantile(self, stage: str, q: float) -> float | None:
        """The ``q`` quantile of ``stage`` in seconds; None when nothing was measured."""
        _check_stage(stage)
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
            raise MonitorQueryError(f"quantile must be within 0..1, got {q!r:.20}", field="q")
        histogram = self.stages.get(stage)
        return histogram.quantile(q) if histogram is not None else None

    def request_rate(self) -> float:
        """HTTP requests per second over the seconds the reports cover."""
        return self.requests / self.span_s if self.span_s > 0 else 0.0

    def error_rate(self) -> float | None:
        """Share of HTTP requests answered 5xx; None without requests."""
        return self.errors / self.requests if self.requests else None


def merged(histograms: list[LatencyHistogram]) -> LatencyHistogram:
    """One histogram of them all: the same as merging one by one, summed column-wise in C
    (a window over a region can hold thousands of reports)."""
    result = LatencyHistogram()
    if histograms:
        result.counts = list(map(sum, zip(*(h.counts for h in histograms), strict=True)))
        result.total = sum(h.total for h in histograms)
        result.sum_s = math.fsum(h.sum_s for h in histograms)
    return result


def _version_of(picked: list[VariantStats] | list[ShadowStats], asked: int | None) -> int | None:
    if asked is not None:
        return asked
    versions = {stats.version for stats in picked}
    return versions.pop() if len(versions) == 1 else None


def _order(report: TelemetryReport) -> tuple[int, int, int]:
    return report.sent_at_ms, report.started_at_ms, report.seq


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise MonitorQueryError(
            f"unknown stage {stage!r:.40}; stages are {', '.join(STAGES)}", field="stage"
        )


def summarise(
    region: str, node: str | None, since: float, until: float, reports: list[TelemetryReport]
) -> WindowSummary:
    reports.sort(key=lambda r: (r.node, *_order(r)))
    by_stage: dict[str, list[LatencyHistogram]] = {}
    events: dict[str, int] = {}
    for report in reports:
        for stage, histogram in report.stages.items():
            by_stage.setdefault(stage, []).append(histogram)
        for outcome, count in report.events.items():
            events[outcome] = events.get(outcome, 0) + count
    stages = {stage: merged(histograms) for stage, histograms in by_stage.items()}
    return WindowSummary(
        region=region,
        node=node,
        since=since,
        until=until,
        reports=len(reports),
        nodes=tuple(sorted({r.node for r in reports})),
        span_s=_covered_seconds(reports),
        requests=sum(r.requests for r in reports),
        errors=sum(r.errors for r in reports),
        overloaded=sum(r.overloaded for r in reports),
        stages=stages,
        events=events,
        _reports=tuple(reports),
    )


def _covered_seconds(reports: list[TelemetryReport]) -> float:
    """Length of the union of the reports' intervals: a region's wall time, however many
    nodes reported it, so requests / span is the region's rate."""
    spans = sorted((r.sent_at_ms / 1000 - r.interval_s, r.sent_at_ms / 1000) for r in reports)
    covered = 0.0
    current_start = current_end = -math.inf
    for start, end in spans:
        if start > current_end:
            if current_end > current_start:
                covered += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end > current_start:
        covered += current_end - current_start
    return covered
