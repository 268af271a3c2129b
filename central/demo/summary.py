"""The demo's closing report: traffic, bundle, latency per region, and where to look next."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from central.demo.edges import EdgeAddress
from central.demo.latency import QUANTILES, Percentiles, sample_percentiles
from central.demo.replay import RegionTraffic, ReplayReport
from central.demo.shop import DemoBundle, ShopLog


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    shop: ShopLog
    bundle: DemoBundle
    replay: ReplayReport
    server_latency: Mapping[str, Percentiles | None]  # edge name -> percentiles
    redis_url: str
    rules_version: str | None


def print_summary(console: Console, outcome: DemoOutcome) -> None:
    console.print()
    console.print(_traffic_table(outcome.replay))
    console.print(_bundle_table(outcome))
    console.print(_latency_table(outcome.replay, outcome.server_latency))
    edges = [region.edge for region in outcome.replay.regions]
    console.print(_endpoint_table(edges, outcome.redis_url))
    example = outcome.replay.regions[0]
    if example.example_session is not None:
        console.print("Try it:", style="bold")
        console.print(
            Text(
                f"  curl -s '{example.edge.base_url}/v1/recommendations"
                f"?session_id={example.example_session}&k=5'"
            ),
            soft_wrap=True,
        )


def _traffic_table(report: ReplayReport) -> Table:
    regions = report.regions
    table = Table(title="Replayed traffic through the edges")
    table.add_column("")
    for region in regions:
        table.add_column(region.edge.name, justify="right")
    table.add_column("all", justify="right")

    def add(label: str, figure: Callable[[RegionTraffic], int]) -> None:
        values = [figure(region) for region in regions]
        table.add_row(label, *(f"{v:,}" for v in values), f"{sum(values):,}")

    add("sessions", lambda r: r.sessions)
    add("events sent", lambda r: r.events_sent)
    add("  accepted", lambda r: r.accepted)
    add("  rejected", lambda r: r.rejected)
    add("retries sent (same event_id)", lambda r: r.retries_sent)
    add("  counted as duplicates", lambda r: r.duplicates)
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
    table = Table(title="Bundle served by every edge", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("version", str(bundle.version))
    table.add_row("file", f"{bundle.path.name} ({bundle.size:,} bytes, signed Ed25519)")
    table.add_row("serves", bundle.precision)
    training = bundle.training
    table.add_row(
        "trained on",
        f"{training.get('events', 0):,} events, {training.get('sessions', 0):,} sessions, "
        f"{training.get('items', 0):,} items in {training.get('seconds', 0.0):.1f} s",
    )
    table.add_row(
        "held back",
        f"{shop.replay_sessions:,} most recent sessions ({shop.replay.n_events:,} events) "
        "for the replay",
    )
    for precision, figures in sorted(bundle.validation.items()):
        table.add_row(
            f"validation {precision}",
            f"HR@20 {figures['hr_at_20']:.4f}  MRR@20 {figures['mrr_at_20']:.4f}  "
            f"({figures['predictions']:,} predictions)",
        )
    table.add_row("rules", outcome.rules_version or "none")
    return table


def _latency_table(report: ReplayReport, server: Mapping[str, Percentiles | None]) -> Table:
    table = Table(
        title="Recommendation latency per region (ms)",
        caption="client: HTTP round trip from the replay on 127.0.0.1; server: the edge's "
        'proxima_edge_stage_seconds{stage="total"} histogram, interpolated in its buckets',
    )
    table.add_column("region / node")
    table.add_column("calls", justify="right")
    names = [f"p{round(q * 100)}" for q in QUANTILES]
    for side in ("client", "server"):
        for name in names:
            table.add_column(f"{side} {name}", justify="right")
    for region in report.regions:
        table.add_row(
            region.edge.name,
            f"{len(region.recommendation_latency_s):,}",
            *_milliseconds(sample_percentiles(region.recommendation_latency_s)),
            *_milliseconds(server.get(region.edge.name)),
        )
    return table


def _endpoint_table(edges: Sequence[EdgeAddress], redis_url: str) -> Table:
    table = Table(title="Where to look (serving until the demo stops)")
    table.add_column("region / node")
    table.add_column("what")
    table.add_column("URL")
    for edge in edges:
        base = edge.base_url
        table.add_row(edge.name, "edge", base)
        table.add_row("", "Prometheus metrics", f"{base}/metrics")
        table.add_row("", "API schema", f"{base}/openapi.json")
        table.add_row("", "loaded bundle", f"{base}/v1/model")
    table.add_row("(shared)", "session windows", redis_url)
    return table


def _milliseconds(percentiles: Percentiles | None) -> list[str]:
    if percentiles is None:
        return ["-"] * len(QUANTILES)
    return [f"{value * 1000:.2f}" for value in percentiles]


def _rate(hits: int, checks: int) -> str:
    return f"{hits / checks:.1%}" if checks else "-"
