"""Latency percentiles: from client-side samples, from an edge's Prometheus histogram, and
from the central latency monitor's per-region gauges."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

QUANTILES = (0.50, 0.95, 0.99)
STAGE_HISTOGRAM = "proxima_edge_stage_seconds"
MONITOR_GAUGE = "proxima_region_latency_seconds"  # labels region, stage, quantile
MONITOR_STAGE = "request"  # the edge's HTTP time of GET /v1/recommendations

Percentiles = tuple[float, ...]  # seconds, one per entry of QUANTILES


def sample_percentiles(samples_s: Sequence[float]) -> Percentiles | None:
    if not samples_s:
        return None
    values = np.quantile(np.asarray(samples_s, dtype=np.float64), QUANTILES)
    return tuple(float(v) for v in values)


def histogram_percentiles(
    metrics_text: str, name: str, labels: Mapping[str, str]
) -> Percentiles | None:
    """Percentiles of one labelled Prometheus histogram, interpolated within buckets the
    way ``histogram_quantile`` does; None when the histogram has no observations."""
    buckets = _cumulative_buckets(metrics_text, name, labels)
    if not buckets or buckets[-1][1] <= 0:
        return None
    return tuple(_bucket_quantile(q, buckets) for q in QUANTILES)


def _cumulative_buckets(
    metrics_text: str, name: str, labels: Mapping[str, str]
) -> list[tuple[float, float]]:
    found: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            if any(sample.labels.get(key) != value for key, value in labels.items()):
                continue
            found.append((float(sample.labels["le"]), float(sample.value)))
    return sorted(found)


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if math.isinf(upper_bound):
                # Beyond the largest finite bucket nothing is known but that lower bound.
                return lower_bound
            if count == lower_count:
                return upper_bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (upper_bound - lower_bound) * share
        lower_bound, lower_count = upper_bound, count
    return lower_bound


def edge_answer_percentiles(base_url: str, timeout_s: float = 5.0) -> Percentiles | None:
    """Server-side percentiles of whole answers (stage ``total``) from an edge's /metrics;
    None when the edge cannot be asked or has answered nothing yet."""
    text = fetch_metrics(f"{base_url}/metrics", timeout_s)
    if text is None:
        return None
    return histogram_percentiles(text, STAGE_HISTOGRAM, {"stage": "total"})


def monitor_percentiles(
    metrics_text: str, region: str, stage: str = MONITOR_STAGE
) -> Percentiles | None:
    """One region's quantiles as the central monitor reports them (over its window, from
    the edges' telemetry); None when it reports none of them yet."""
    values: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != MONITOR_GAUGE:
            continue
        for sample in family.samples:
            labels = sample.labels
            if labels.get("region") == region and labels.get("stage") == stage:
                try:
                    values[float(labels.get("quantile", "nan"))] = float(sample.value)
                except ValueError:
                    continue
    if not all(q in values for q in QUANTILES):
        return None
    return tuple(values[q] for q in QUANTILES)


def fetch_metrics(url: str, timeout_s: float = 5.0) -> str | None:
    try:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return response.text
