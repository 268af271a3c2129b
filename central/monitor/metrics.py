"""The monitor's Prometheus metrics, on a registry of its own.

Region and node figures are computed from the store when scraped (over the last
``window_s``), so they appear and disappear with the nodes the store holds and cost
nothing between scrapes. Variant counters (requests, errors, impressions, clicks) are
totals since this process started, kept only for regions the store still holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from central.monitor.figures import QUANTILES
from central.monitor.store import TelemetryStore
from protocol.telemetry import STAGES, TelemetryReport

OUTCOMES = ("accepted", "duplicate", "malformed", "too_frequent", "region_full", "dropped")
REQUEST_OUTCOMES = ("answered", "refused")


@dataclass(slots=True)
class _VariantTotals:
    requests: int = 0
    errors: int = 0
    impressions: int = 0
    clicks: int = 0


class MonitorMetrics:
    def __init__(
        self,
        store: TelemetryStore,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reports = Counter(
            "proxima_monitor_reports",
            "Telemetry reports received, by outcome (dropped: NATS discarded them because the "
            "monitor fell behind, a slow consumer; too_frequent: closer than the minimum spacing; "
            "region_full: a new node of a region at its cap)",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.reports.labels(outcome)
        self.requests = Counter(
            "proxima_monitor_requests",
            "Latency queries answered or refused as malformed",
            ["outcome"],
            registry=r,
        )
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        self.connected = Gauge(
            "proxima_monitor_connected", "1 while the monitor is connected to NATS", registry=r
        )
        self.pending = Gauge(
            "proxima_monitor_pending_reports",
            "Telemetry messages received and not yet processed",
            registry=r,
        )
        self.variant_totals = _VariantCollector(store)
        r.register(_StoreCollector(store, window_s, clock))
        r.register(self.variant_totals)

    def count_report(self, report: TelemetryReport) -> None:
        self.variant_totals.add(report)


class _VariantCollector(Collector):
    def __init__(self, store: TelemetryStore) -> None:
        self.store = store
        self.totals: dict[tuple[str, str], _VariantTotals] = {}

    def add(self, report: TelemetryReport) -> None:
        for name, stats in report.variants.items():
            totals = self.totals.setdefault((report.region, name), _VariantTotals())
            totals.requests += stats.requests
            totals.errors += stats.errors
            totals.impressions += stats.impressions
            totals.clicks += stats.clicks

    def describe(self) -> Iterable[CounterMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[CounterMetricFamily]:
        held = set(self.store.regions())
        for key in [key for key in self.totals if key[0] not in held]:
            del self.totals[key]
        return self._families()

    def _families(self) -> list[CounterMetricFamily]:
        labels = ["region", "variant"]
        families = {
            field: CounterMetricFamily(f"proxima_variant_{field}", text, labels=labels)
            for field, text in (
                ("requests", "Recommendation answers given by each variant"),
                ("errors", "Answers a variant failed to give"),
                ("impressions", "Impression events of answers by each variant"),
                ("clicks", "Click events on answers by each variant"),
            )
        }
        for (region, variant), totals in sorted(self.totals.items()):
            for field, family in families.items():
                family.add_metric([region, variant], getattr(totals, field))
        return list(families.values())


class _StoreCollector(Collector):
    def __init__(self, store: TelemetryStore, window_s: float, clock: Callable[[], float]) -> None:
        self.store = store
        self.window_s = window_s
        self.clock = clock

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(_Families().all())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families = _Families()
        now = self.clock()
        for region in self.store.regions():
            summary = self.store.window(region, now - self.window_s, now)
            for stage in STAGES:
                for _, q in QUANTILES:
                    value = summary.quantile(stage, q)
                    if value is not None:
                        families.latency.add_metric([region, stage, str(q)], value)
            families.rate.add_metric([region], summary.request_rate())
            error_rate = summary.error_rate()
            if error_rate is not None:
                families.errors.add_metric([region], error_rate)
            if summary.span_s > 0:
                for outcome, count in summary.events.items():
                    families.events.add_metric([region, outcome], count / summary.span_s)
            for variant in ("stable", "canary"):
                stats = summary.variant(variant)
                if stats.impressions:
                    families.ctr.add_metric([region, variant], stats.clicks / stats.impressions)
            for status in self.store.nodes(region):
                node = [region, status.node]
                for variant, version in (("stable", status.stable), ("canary", status.canary)):
                    if version is not None:
                        families.version.add_metric([*node, variant], version)
                families.canary_percent.add_metric(node, status.canary_percent)
                families.silent.add_metric(node, float(status.silent))
                families.stale.add_metric(node, float(status.stale))
                families.ready.add_metric(node, float(status.ready))
                families.restarted.add_metric(node, float(status.restarted))
                families.last_seen.add_metric(node, status.last_seen)
                families.spool.add_metric(node, status.spool_events)
                latest = self.store.latest_report(region, status.node)
                if latest is not None:
                    families.lag.add_metric(node, latest.publish_lag_s)
        return list(families.all())


class _Families:
    def __init__(self) -> None:
        node = ["region", "node"]
        self.latency = GaugeMetricFamily(
            "proxima_region_latency_seconds",
            "Edge latency quantiles per region and stage over the monitor's window",
            labels=["region", "stage", "quantile"],
        )
        self.rate = GaugeMetricFamily(
            "proxima_region_requests_per_second", "Edge HTTP requests per second", labels=["region"]
        )
        self.errors = GaugeMetricFamily(
            "proxima_region_error_ratio",
            "Share of edge HTTP requests answered 5xx",
            labels=["region"],
        )
        self.events = GaugeMetricFamily(
            "proxima_region_events_per_second",
            "Events the edges took in, by outcome",
            labels=["region", "outcome"],
        )
        self.ctr = GaugeMetricFamily(
            "proxima_variant_ctr",
            "Clicks per impression of each variant's answers over the monitor's window",
            labels=["region", "variant"],
        )
        self.version = GaugeMetricFamily(
            "proxima_node_bundle_version",
            "Bundle version a node holds, per variant",
            labels=["region", "node", "variant"],
        )
        self.canary_percent = GaugeMetricFamily(
            "proxima_node_canary_percent", "Share of sessions the canary answers", labels=node
        )
        self.silent = GaugeMetricFamily(
            "proxima_node_silent", "1 when no telemetry arrived from the node lately", labels=node
        )
        self.stale = GaugeMetricFamily(
            "proxima_node_stale",
            "1 when the node cannot confirm its bundle with the bus",
            labels=node,
        )
        self.ready = GaugeMetricFamily(
            "proxima_node_ready", "1 when the node serves a verified bundle", labels=node
        )
        self.restarted = GaugeMetricFamily(
            "proxima_node_restarted", "1 when the node restarted lately", labels=node
        )
        self.last_seen = GaugeMetricFamily(
            "proxima_node_last_seen_timestamp_seconds",
            "When the node's latest report arrived",
            labels=node,
        )
        self.spool = GaugeMetricFamily(
            "proxima_node_spool_events", "Events accepted and not yet published", labels=node
        )
        self.lag = GaugeMetricFamily(
            "proxima_node_publish_lag_seconds",
            "Age of the node's oldest event not yet in JetStream",
            labels=node,
        )

    def all(self) -> Iterable[GaugeMetricFamily]:
        return (value for value in vars(self).values() if isinstance(value, GaugeMetricFamily))
