"""The demo's closing report: events at every stage, the bundle, latency per region, and
where to look next."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from devtools.demo.history import HistoryReport, RegionIngest
from devtools.demo.latency import MONITOR_STAGE, QUANTILES, Percentiles, sample_percentiles
from devtools.demo.replay import RegionTraffic, ReplayReport
from devtools.demo.run_state import PipelineCounts
from devtools.demo.shop import ShopLog
from protocol.bundle import Bundle

STOREFRONT_PATH = "/demo/"
_GATE = re.compile(r"gate (passed|refused) \((.*?)\);")


@dataclass(frozen=True, slots=True)
class Endpoints:
    nats_url: str
    nats_monitor: str
    kafka_bootstrap: str
    redis_url: str
    central_metrics: str
    pids: Mapping[str, int | None]


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    shop: ShopLog
    history: HistoryReport
    history_counts: PipelineCounts
    bundle: Bundle
    bundle_ready_s: float | None
    retrain_report: str | None
    replay: ReplayReport
    final_counts: PipelineCounts
    server_latency: Mapping[str, Percentiles | None]  # edge name -> percentiles
    monitor_latency: Mapping[str, Percentiles | None]  # region -> percentiles
    rules_version: str | None
    endpoints: Endpoints


def print_summary(console: Console, outcome: DemoOutcome) -> None:
    console.print()
    console.print(_pipeline_table(outcome))
    console.print(_traffic_table(outcome.replay))
    console.print(_bundle_table(outcome))
    console.print(_latency_table(outcome))
    console.print(_endpoint_table(outcome))
    console.print("Try it:", style="bold")
    example = outcome.replay.regions[0]
    if example.example_session is not None:
        console.print(
            Text(
                f"  curl -s '{example.edge.base_url}/v1/recommendations"
                f"?session_id={example.example_session}&k=5'"
            ),
            soft_wrap=True,
        )
    console.print(Text(f"  proxima latency --nats {outcome.endpoints.nats_url} --watch"))


def _pipeline_table(outcome: DemoOutcome) -> Table:
    history, replay = outcome.history.regions, outcome.replay.regions
    counts = outcome.final_counts
    table = Table(title="Events through the pipeline (history, then live replay)")
    table.add_column("")
    for region in history:
        table.add_column(region.edge.name, justify="right")
    table.add_column("all", justify="right")

    def add(label: str, figure: Callable[[RegionIngest, RegionTraffic], int]) -> None:
        values = [figure(h, r) for h, r in zip(history, replay, strict=True)]
        table.add_row(label, *(f"{v:,}" for v in values), f"{sum(values):,}")

    def add_total(label: str, value: int) -> None:
        table.add_row(label, *([""] * len(history)), f"{value:,}")

    add("sent to the edges over HTTP", lambda h, r: h.events_sent + r.events_sent)
    add("re-sent (same event_id)", lambda h, r: h.retries_sent + r.retries_sent)
    add("accepted by the edge", lambda h, r: h.accepted + r.accepted)
    add("  counted as duplicates", lambda h, r: h.duplicates + r.duplicates)
    add("  rejected", lambda h, r: h.rejected + r.rejected)
    add("in JetStream EVENTS", lambda h, r: counts.stream.of_region(h.edge.region))
    add_total("in Kafka proxima.events: records", counts.topic.records)
    add("  distinct event ids", lambda h, r: counts.topic.distinct_of_region(h.edge.region))
    add_total("trained on (first bundle)", int(outcome.bundle.manifest.training.get("events", 0)))
    first = outcome.history_counts
    table.caption = (
        f"history only: JetStream {first.stream.messages:,}, Kafka {first.topic.distinct:,} "
        "distinct; "
        + (
            "every accepted event had reached Kafka when counted"
            if counts.settled
            else "NOT every accepted event had reached Kafka when counted"
        )
    )
    return table


def _traffic_table(report: ReplayReport) -> Table:
    regions = report.regions
    table = Table(title="Live replay of the held-back sessions: recommendations")
    table.add_column("")
    for region in regions:
        table.add_column(region.edge.name, justify="right")
    table.add_column("all", justify="right")

    def add(label: str, figure: Callable[[RegionTraffic], int]) -> None:
        values = [figure(region) for region in regions]
        table.add_row(label, *(f"{v:,}" for v in values), f"{sum(values):,}")

    add("sessions", lambda r: r.sessions)
    add("events sent", lambda r: r.events_sent)
    add("recommendations answered", lambda r: r.recommendations)
    add("  cold (no usable history)", lambda r: r.cold_answers)
    add("rules fired", lambda r: sum(r.rules_fired.values()))
    add("  answers with an offer", lambda r: r.answers_with_offers)
    add("offers attached", lambda r: r.offers)
    add("failed requests (not 2xx)", lambda r: r.failed_requests)
    rates = [_rate(r.next_item_hits, r.next_item_checks) for r in regions]
    overall = _rate(report.total("next_item_hits"), report.total("next_item_checks"))
    table.add_row("next view in previous top 20", *rates, overall)
    fired = ", ".join(f"{rule} {count:,}" for rule, count in report.rules_fired.most_common())
    table.caption = f"rules fired: {fired}" if fired else "no rule fired"
    return table


def _bundle_table(outcome: DemoOutcome) -> Table:
    bundle, shop = outcome.bundle, outcome.shop
    manifest = bundle.manifest
    table = Table(title="Bundle trained by central, served by every edge", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("version", str(manifest.version))
    table.add_row(
        "published",
        f"bundle-{manifest.version} in proxima-models ({bundle.size:,} bytes, signed "
        "Ed25519, verified again here); stable in proxima-rollout for "
        + ", ".join(region.edge.region for region in outcome.history.regions),
    )
    if outcome.bundle_ready_s is not None:
        table.add_row("served", f"by both edges {outcome.bundle_ready_s:.0f} s after the start")
    training = manifest.training
    precision = manifest.ranker.get("precision")
    table.add_row("ranker", f"{training.get('model', '?')}, serves {precision}")
    table.add_row(
        "trained on",
        f"{training.get('events', 0):,} events from Kafka, {training.get('sessions', 0):,} "
        f"sessions, {training.get('items', 0):,} items in {training.get('seconds', 0.0):.1f} s",
    )
    for precision, figures in sorted(manifest.metrics.get("validation", {}).items()):
        table.add_row(
            f"validation {precision}",
            f"HR@20 {figures['hr_at_20']:.4f}  MRR@20 {figures['mrr_at_20']:.4f}  "
            f"({figures['predictions']:,} predictions, most recent sessions)",
        )
    gate = _GATE.search(outcome.retrain_report or "")
    if gate is not None:
        table.add_row("gate", f"{gate.group(1)}: {gate.group(2)}")
    table.add_row(
        "held back",
        f"{shop.replay_sessions:,} most recent sessions ({shop.replay.n_events:,} events), "
        "replayed live",
    )
    table.add_row("rules at the edges", outcome.rules_version or "none")
    return table


def _latency_table(outcome: DemoOutcome) -> Table:
    caption = (
        "client: HTTP round trip measured by the replay on 127.0.0.1; edge: the edge's "
        'proxima_edge_stage_seconds{stage="total"} histogram, interpolated in its buckets; '
        "central: proxima central run's latency monitor, from the edges' telemetry "
        f'(proxima_region_latency_seconds{{stage="{MONITOR_STAGE}"}}, its last minute)'
    )
    table = Table(title="Recommendation latency per region (ms)", caption=caption)
    table.add_column("region / node", no_wrap=True)
    table.add_column("calls", justify="right")
    names = [f"p{round(q * 100)}" for q in QUANTILES]
    for side in ("client", "edge", "central"):
        for name in names:
            table.add_column(f"{side}\n{name}", justify="right")
    for region in outcome.replay.regions:
        cells = [
            *_milliseconds(sample_percentiles(region.recommendation_latency_s)),
            *_milliseconds(outcome.server_latency.get(region.edge.name)),
            *_milliseconds(outcome.monitor_latency.get(region.edge.region)),
        ]
        table.add_row(region.edge.name, f"{len(region.recommendation_latency_s):,}", *cells)
    return table


def _endpoint_table(outcome: DemoOutcome) -> Table:
    table = Table(title="Where to look (serving until the demo stops)")
    table.add_column("part")
    table.add_column("what")
    table.add_column("URL")
    for region in outcome.replay.regions:
        base = region.edge.base_url
        table.add_row(f"edge {region.edge.name}", "API", base)
        table.add_row("", "storefront page", f"{base}{STOREFRONT_PATH}")
        table.add_row("", "loaded bundle", f"{base}/v1/model")
        table.add_row("", "Prometheus metrics", f"{base}/metrics")
        table.add_row("", "API schema", f"{base}/openapi.json")
    endpoints = outcome.endpoints
    table.add_row("nats-server", "JetStream, bundles, rollout", endpoints.nats_url)
    table.add_row("", "monitoring", f"{endpoints.nats_monitor}/jsz?streams=true")
    table.add_row("Tansu", "Kafka bootstrap", endpoints.kafka_bootstrap)
    table.add_row("redis-server", "session windows", endpoints.redis_url)
    table.add_row("proxima central run", "latency monitor", endpoints.central_metrics)
    pids = ", ".join(f"{name} {pid}" for name, pid in endpoints.pids.items() if pid is not None)
    table.caption = f"processes: {pids}"
    return table


def _milliseconds(percentiles: Percentiles | None) -> list[str]:
    if percentiles is None:
        return ["-"] * len(QUANTILES)
    return [f"{value * 1000:.2f}" for value in percentiles]


def _rate(hits: int, checks: int) -> str:
    return f"{hits / checks:.1%}" if checks else "-"
