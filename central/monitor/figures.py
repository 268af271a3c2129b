"""The figures ``proxima latency`` shows, as one JSON-ready object computed from a store.

The monitor answers requests with it and the command computes it itself when no monitor
answers, so both paths print the same thing. Latencies are in milliseconds.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from central.monitor.query import LatencyQuery
from central.monitor.store import NodeStatus, TelemetryStore, WindowSummary
from protocol.telemetry import STAGES, VARIANTS, LatencyHistogram

Source = Literal["monitor", "telemetry"]  # the running monitor, or telemetry heard directly
QUANTILES: Final = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def latency_summary(
    store: TelemetryStore, query: LatencyQuery, *, source: Source, now: float
) -> dict[str, Any]:
    since = now - query.window_s
    regions = [query.region] if query.region is not None else store.regions()
    return {
        "source": source,
        "window_s": query.window_s,
        "since": since,
        "until": now,
        "regions": [
            _region(store, region, since, now, with_nodes=query.nodes) for region in regions
        ],
    }


def window_figures(summary: WindowSummary) -> dict[str, Any]:
    error_rate = summary.error_rate()
    return {
        "reports": summary.reports,
        "span_s": round(summary.span_s, 3),
        "requests": summary.requests,
        "request_rate": round(summary.request_rate(), 3),
        "errors": summary.errors,
        "error_rate": None if error_rate is None else round(error_rate, 6),
        "overloaded": summary.overloaded,
        "events": dict(sorted(summary.events.items())),
        "latency_ms": {
            stage: histogram_figures(summary.stages[stage])
            for stage in STAGES
            if stage in summary.stages
        },
        "variants": _variants(summary),
    }


def histogram_figures(histogram: LatencyHistogram) -> dict[str, Any]:
    figures: dict[str, Any] = {"count": histogram.total}
    for name, q in QUANTILES:
        figures[name] = _ms(histogram.quantile(q))
    figures["mean"] = _ms(histogram.mean())
    return figures


def _region(
    store: TelemetryStore, region: str, since: float, until: float, *, with_nodes: bool
) -> dict[str, Any]:
    statuses = store.nodes(region)
    summary = store.window(region, since, until)
    figures: dict[str, Any] = {
        "region": region,
        "nodes_total": len(statuses),
        "nodes_reporting": len(summary.nodes),
        "silent": [s.node for s in statuses if s.silent],
        "stale": [s.node for s in statuses if s.stale],
        "not_ready": [s.node for s in statuses if not s.ready],
        "restarted": [s.node for s in statuses if s.restarted],
        "refused": [
            {"node": s.node, "version": r.version, "code": r.code, "message": r.message}
            for s in statuses
            for r in s.refused
        ],
        "bundles": {
            "stable": sorted({s.stable for s in statuses if s.stable is not None}),
            "canary": sorted({s.canary for s in statuses if s.canary is not None}),
            "canary_percent": sorted({s.canary_percent for s in statuses if s.canary}),
            "shadow": any(s.shadow for s in statuses),
        },
        **window_figures(summary),
    }
    if with_nodes:
        figures["nodes"] = [
            {**_node(s), **window_figures(store.window(region, since, until, node=s.node))}
            for s in statuses
        ]
    return figures


def _node(status: NodeStatus) -> dict[str, Any]:
    return {
        "node": status.node,
        "last_seen": status.last_seen,
        "silent": status.silent,
        "stale": status.stale,
        "ready": status.ready,
        "restarted": status.restarted,
        "stable": status.stable,
        "canary": status.canary,
        "canary_percent": status.canary_percent,
        "shadow": status.shadow,
        "spool_events": status.spool_events,
    }


def _variants(summary: WindowSummary) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in VARIANTS:
        stats = summary.variant(name)
        if not (stats.requests or stats.errors or stats.impressions or stats.clicks):
            continue
        found[name] = {
            "version": stats.version,
            "requests": stats.requests,
            "errors": stats.errors,
            "impressions": stats.impressions,
            "clicks": stats.clicks,
            "ctr": round(stats.clicks / stats.impressions, 6) if stats.impressions else None,
            "latency_ms": histogram_figures(stats.latency),
        }
    return found


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 4)
