"""The Grafana dashboard parses, and every metric its queries name is one the code exports.

The exported names come from the registries themselves (an edge's, the monitor's), family
by family, with the suffixes each type's samples carry; nothing here lists names by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from central.bridge import BridgeStatus
from central.lake.writer import LakeWriterStatus
from central.metrics import central_registry
from central.monitor.service import LatencyMonitor, MonitorSettings
from central.outcomes.service import OutcomesCollector, OutcomesService, OutcomesSettings
from central.trainer.service import TrainerStatus
from edge_node.metrics import EdgeMetrics
from runtime.nats import NatsSettings

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy/edge/grafana/proxima-edge.json"

# What a family's samples are called, by family type (prometheus_client strips the suffix);
# a family without samples yet (a labelled counter before its first increment) is named so.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                "and", "or", "unless", "inf", "nan"}  # fmt: skip


def exported_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def registries() -> dict[str, CollectorRegistry]:
    monitor = LatencyMonitor(MonitorSettings(nats=NatsSettings()))
    bridge = BridgeStatus(0, 0, 0, 0, 0, None, True)
    central = central_registry(bridge=lambda: bridge, trainer=TrainerStatus, lake=LakeWriterStatus)
    central.register(OutcomesCollector(OutcomesService(OutcomesSettings(Path("lake")))))
    return {
        "edge": EdgeMetrics("eu", "n1").registry,
        "monitor": monitor.registry,
        "central": central,
    }


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names or values, durations or dashboard variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # dashboard variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):  # not inside 5m or 1e3
        name = match.group()
        followed_by = text[match.end() :].lstrip()[:1]
        if name.lower() in PROMQL_WORDS or followed_by == "(":
            continue
        names.add(name)
    return names


def panels_of(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels_of(panel.get("panels", []))


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels_of(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.+?)(?:,\s*\w+)?\)", text)
            yield f"variable {variable['name']}", inner.group(1) if inner else text


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return body


def test_the_dashboard_is_a_grafana_model_of_prometheus_panels(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    panels = list(panels_of(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [panel for panel in panels if panel["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24 and position["h"] > 0, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "region"} <= variables
    used = " ".join(expr for _, expr in queries(dashboard))
    assert "$region" in used


def test_every_metric_in_every_query_is_exported(dashboard: dict[str, Any]) -> None:
    exported = set().union(*(exported_names(r) for r in registries().values()))
    unknown: list[str] = []
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown.extend(f"{where}: {name}" for name in sorted(names - exported))
    assert not unknown, "metrics no registry exports:\n" + "\n".join(unknown)


def test_the_dashboard_shows_both_sources_of_region_latency(dashboard: dict[str, Any]) -> None:
    named = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    assert "proxima_edge_stage_seconds_bucket" in named  # edge histograms, histogram_quantile
    assert "proxima_region_latency_seconds" in named  # the monitor's merged telemetry
    assert {"proxima_variant_ctr", "proxima_node_bundle_version"} <= named


def test_the_name_finder_sees_through_functions_labels_and_joins() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (region, le) (rate(a_bucket{stage="x"}[$__rate_interval])'
        ' * on (instance, job) group_left (region) b_info{region=~"$region"})) / c_total offset 5m'
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "c_total"}
    assert "proxima_edge_requests_total" in exported_names(registries()["edge"])
    assert "proxima_edge_stage_seconds_bucket" in exported_names(registries()["edge"])
