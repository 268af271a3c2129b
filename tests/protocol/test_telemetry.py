"""The telemetry contract: histograms that merge exactly, reports that round-trip and refuse
malformed input with the field named."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.telemetry import (
    BUCKET_BOUNDS,
    BUCKET_GROWTH,
    LatencyHistogram,
    Refused,
    ShadowStats,
    TelemetryError,
    TelemetryReport,
    VariantStats,
    bucket_of,
    bucket_range,
    decode_report,
)

latencies = st.lists(st.floats(min_value=1e-7, max_value=60.0), max_size=200)


def histogram_of(values: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values:
        histogram.observe(value)
    return histogram


@given(latencies, latencies)
def test_merging_two_histograms_equals_observing_everything_in_one(
    a: list[float], b: list[float]
) -> None:
    merged = histogram_of(a).merge(histogram_of(b))
    whole = histogram_of(a + b)
    assert merged.counts == whole.counts
    assert merged.total == whole.total == len(a) + len(b)
    assert merged.sum_s == pytest.approx(whole.sum_s)


@given(st.floats(min_value=1e-5, max_value=30.0))
def test_every_value_falls_in_the_bucket_whose_range_holds_it(value: float) -> None:
    low, high = bucket_range(bucket_of(value))
    assert low < value <= high
    assert high / max(low, BUCKET_BOUNDS[0]) <= BUCKET_GROWTH + 1e-9


def test_quantiles_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(-7.5, 0.8) for _ in range(5000))
    histogram = histogram_of(values)
    for q in (0.5, 0.95, 0.99):
        exact = values[int(q * len(values)) - 1]
        estimate = histogram.quantile(q)
        assert estimate is not None
        assert exact / BUCKET_GROWTH <= estimate <= exact * BUCKET_GROWTH, (q, exact, estimate)


def test_an_empty_histogram_has_no_quantile_and_bad_quantiles_are_refused() -> None:
    assert LatencyHistogram().quantile(0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        LatencyHistogram().quantile(1.5)


def full_report() -> TelemetryReport:
    total = histogram_of([0.0004, 0.0006, 0.002])
    return TelemetryReport(
        region="eu",
        node="edge-1",
        seq=3,
        started_at_ms=1_700_000_000_000,
        sent_at_ms=1_700_000_015_000,
        interval_s=5.0,
        ready=True,
        stale=False,
        stable=7,
        canary=8,
        canary_percent=25,
        refused=(Refused(9, "bad_signature", "signature does not verify"),),
        requests=40,
        errors=1,
        overloaded=2,
        stages={"total": total, "request": histogram_of([0.0009])},
        variants={
            "stable": VariantStats(7, 30, 0, 25, 4, histogram_of([0.0005] * 30)),
            "canary": VariantStats(8, 9, 1, 8, 2, histogram_of([0.0007] * 9)),
        },
        shadow_stats=ShadowStats(8, 5, 0, 3.5, histogram_of([0.0003] * 5)),
        events={"accepted": 10, "duplicate": 1, "rejected": 0},
        spool_events=12,
        spool_bytes=3400,
        publish_lag_s=0.25,
    )


def test_a_report_round_trips_through_msgpack() -> None:
    report = full_report()
    decoded = decode_report(report.encode())
    assert decoded == report


def _tampered(**changes: object) -> bytes:
    body = msgpack.unpackb(full_report().encode(), strict_map_key=False)
    for path, value in changes.items():
        target = body
        *parents, last = path.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return bytes(msgpack.packb(body))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"region": "e.u"}, "region"),
        ({"seq": -1}, "seq"),
        ({"schema": 2}, "schema"),
        ({"bundle__canary_percent": 101}, "bundle.canary_percent"),
        ({"bundle__stable": 0}, "bundle.stable"),
        ({"stages__total__n": 4}, "stages.total"),
        ({"stages__wall": {"n": 0, "sum": 0.0, "b": {}}}, "stages"),
        ({"variants__stable__clicks": "3"}, "variants.stable.clicks"),
        ({"interval_s": float("nan")}, "interval_s"),
        ({"refused": [[9, "code"]]}, "refused"),
        ({"spool": [1, 2]}, "spool"),
        ({"ready": 1}, "ready"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(TelemetryError) as caught:
        decode_report(_tampered(**changes))
    assert caught.value.field == field
    assert caught.value.code == "bad_telemetry"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_decode_into_anything_but_a_telemetry_error(data: bytes) -> None:
    with contextlib.suppress(TelemetryError):
        decode_report(data)


def test_an_unknown_key_is_refused() -> None:
    body = msgpack.unpackb(full_report().encode(), strict_map_key=False)
    body["extra"] = 1
    with pytest.raises(TelemetryError, match="unknown keys"):
        decode_report(bytes(msgpack.packb(body)))
