"""Rich tables of a latency summary (the JSON of :mod:`central.monitor.figures`)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from protocol.telemetry import STAGES

# What a client sees first, then the edge's own time and its parts.
STAGE_ORDER = ("request", "total", *(s for s in STAGES if s not in ("request", "total")))


def render_summary(summary: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [Text(_source_line(summary), style="dim")]
    regions = summary["regions"]
    if not regions:
        parts.append(Text("no edge has reported telemetry", style="yellow"))
    for region in regions:
        parts.append(Text.from_markup(f"\n[bold]{region['region']}[/bold]  {_region_line(region)}"))
        parts.append(_region_table(region))
        if "nodes" in region:
            parts.append(_nodes_table(region))
    return Group(*parts)


def _source_line(summary: dict[str, Any]) -> str:
    window = _duration(summary["window_s"])
    if summary["source"] == "telemetry":
        listened = f"{summary.get('listened_s') or 0.0:.1f}s"
        return (
            f"no monitor answered: figures from {listened} of telemetry heard directly "
            f"(window {window})"
        )
    return f"figures from the latency monitor over the last {window}"


def _region_table(region: dict[str, Any]) -> Table:
    table = Table(
        caption=_health_line(region),
        caption_justify="left",
    )
    table.add_column("stage")
    for name in ("count", "p50 ms", "p95 ms", "p99 ms", "mean ms"):
        table.add_column(name, justify="right")
    latency = region["latency_ms"]
    for stage in STAGE_ORDER:
        figures = latency.get(stage)
        if figures is None:
            continue
        table.add_row(
            stage,
            str(figures["count"]),
            *(_ms(figures[name]) for name in ("p50", "p95", "p99", "mean")),
        )
    if not latency:
        table.add_row("(no answers in the window)", "", "", "", "", "")
    return table


def _region_line(region: dict[str, Any]) -> str:
    bundles = region["bundles"]
    stable = "/".join(f"v{v}" for v in bundles["stable"]) or "none"
    parts = [
        f"{region['nodes_reporting']}/{region['nodes_total']} nodes reporting",
        f"{region['request_rate']:.1f} req/s",
        f"errors {_percent(region['error_rate'])}",
        f"stable {stable}",
    ]
    if bundles["canary"]:
        canary = "/".join(f"v{v}" for v in bundles["canary"])
        percent = "/".join(f"{p}%" for p in bundles["canary_percent"]) or "0%"
        parts.append(f"canary {canary} at {percent}" + (" (shadow)" if bundles["shadow"] else ""))
    if region["overloaded"]:
        parts.append(f"{region['overloaded']} refused as overloaded")
    return " · ".join(parts)


def _health_line(region: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("silent", "silent"),
        ("stale", "stale"),
        ("not_ready", "not ready"),
        ("restarted", "restarted"),
    ):
        if region[key]:
            parts.append(f"[red]{label}: {', '.join(region[key])}[/red]")
    for refusal in region["refused"]:
        parts.append(
            f"[red]{refusal['node']} refused v{refusal['version']} ({refusal['code']})[/red]"
        )
    return "  ".join(parts) if parts else "[green]all nodes reporting, none stale[/green]"


def _nodes_table(region: dict[str, Any]) -> Table:
    table = Table(title=f"{region['region']}: nodes", title_justify="left")
    table.add_column("node")
    table.add_column("state")
    for name in ("seen", "stable", "canary", "req/s", "errors"):
        table.add_column(name, justify="right")
    for name in ("request p50/p95/p99 ms", "total p99 ms", "spool"):
        table.add_column(name, justify="right")
    now = time.time()
    for node in region["nodes"]:
        request = node["latency_ms"].get("request", {})
        total = node["latency_ms"].get("total", {})
        canary = f"v{node['canary']} {node['canary_percent']}%" if node["canary"] else "-"
        table.add_row(
            node["node"],
            _state(node),
            f"{max(now - node['last_seen'], 0.0):.0f}s ago",
            f"v{node['stable']}" if node["stable"] else "-",
            canary + (" shadow" if node["shadow"] else ""),
            f"{node['request_rate']:.1f}",
            _percent(node["error_rate"]),
            "/".join(_ms(request.get(q)) for q in ("p50", "p95", "p99")),
            _ms(total.get("p99")),
            str(node["spool_events"]),
        )
    return table


def _state(node: dict[str, Any]) -> str:
    states = [name for name in ("silent", "stale", "restarted") if node[name]]
    if not node["ready"]:
        states.append("not ready")
    return "[red]" + ", ".join(states) + "[/red]" if states else "[green]ok[/green]"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.2f}%"


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
