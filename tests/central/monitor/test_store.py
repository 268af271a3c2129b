"""TelemetryStore: merging nodes and intervals, windows, versions, silence, restarts, bounds."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from central.monitor.errors import MonitorQueryError, MonitorSettingsError
from central.monitor.store import TelemetryStore
from protocol.telemetry import BUCKET_GROWTH, LatencyHistogram, Refused, ShadowStats
from tests.central.monitor.reports import T0, FakeClock, histogram, repeated, report, variant


def same(a: LatencyHistogram, b: LatencyHistogram) -> bool:
    """Equal counts; sums equal but for the order floats were added in."""
    return (a.counts, a.total) == (b.counts, b.total) and math.isclose(a.sum_s, b.sum_s)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 60)


@pytest.fixture
def store(clock: FakeClock) -> TelemetryStore:
    """Without the spacing check: these tests add a node's history at one instant."""
    return TelemetryStore(min_spacing_s=0, clock=clock)


def test_a_window_merges_every_node_and_interval_of_its_region(store: TelemetryStore) -> None:
    store.add(report(node="n1", seq=1, sent_at=T0 + 5, requests=10, errors=1, overloaded=2,
                     stages={"request": repeated(0.001, 10)}, events={"accepted": 4}))  # fmt: skip
    store.add(report(node="n1", seq=2, sent_at=T0 + 10, requests=20,
                     stages={"request": repeated(0.002, 20)}, events={"accepted": 1}))  # fmt: skip
    store.add(report(node="n2", seq=1, sent_at=T0 + 10, requests=30, errors=2,
                     stages={"request": repeated(0.004, 30), "total": repeated(0.0005, 30)},
                     events={"rejected": 3}))  # fmt: skip
    store.add(report(region="us", node="n1", sent_at=T0 + 10, requests=1000))

    summary = store.window("eu", T0, T0 + 10)

    assert (summary.region, summary.node) == ("eu", None)
    assert summary.reports == 3
    assert summary.nodes == ("n1", "n2")
    assert (summary.requests, summary.errors, summary.overloaded) == (60, 3, 2)
    assert summary.events == {"accepted": 5, "rejected": 3}
    assert same(summary.stages["request"], histogram(*[0.001] * 10, *[0.002] * 20, *[0.004] * 30))
    assert summary.stages["total"].total == 30
    assert summary.span_s == pytest.approx(10.0)  # both nodes cover T0..T0+10: once
    assert summary.request_rate() == pytest.approx(6.0)
    assert summary.error_rate() == pytest.approx(3 / 60)


def test_merged_quantiles_agree_with_the_raw_latencies_within_one_bucket(
    store: TelemetryStore,
) -> None:
    rng = random.Random(5)
    raw: list[float] = []
    for n, node in enumerate(("a", "b", "c")):
        for seq in range(1, 7):
            values = [rng.lognormvariate(math.log(0.0008 * (n + 1)), 0.6) for _ in range(200)]
            raw.extend(values)
            store.add(report(node=node, seq=seq, sent_at=T0 + 5 * seq,
                             stages={"request": histogram(*values)}))  # fmt: skip
    summary = store.window("eu", T0, T0 + 30)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(raw, q, method="inverted_cdf"))
        estimate = summary.quantile("request", q)
        assert estimate is not None
        assert exact / BUCKET_GROWTH <= estimate <= exact * BUCKET_GROWTH, (q, exact, estimate)


def test_window_bounds_are_open_at_since_and_closed_at_until(
    store: TelemetryStore, clock: FakeClock
) -> None:
    for seq, at in enumerate((T0, T0 + 5, T0 + 10, T0 + 15), start=1):
        store.add(report(seq=seq, sent_at=at, requests=seq))
    assert store.window("eu", T0, T0 + 10).requests == 2 + 3
    assert store.window("eu", T0 - 1, T0).requests == 1
    clock.now = T0 + 12
    assert store.window("eu", T0 + 5).requests == 3  # until defaults to now


def test_span_is_the_union_of_intervals_so_a_gap_is_not_counted(store: TelemetryStore) -> None:
    store.add(report(node="n1", seq=1, sent_at=T0 + 5, requests=50))
    store.add(report(node="n1", seq=3, sent_at=T0 + 15, requests=50))  # seq 2 was lost
    store.add(report(node="n2", seq=1, sent_at=T0 + 7, interval_s=4.0, requests=0))
    summary = store.window("eu", T0, T0 + 20)
    assert summary.span_s == pytest.approx(5 + 2 + 5)  # [0,5] + [3,7] + [10,15], overlaps once
    assert summary.request_rate() == pytest.approx(100 / 12)


def test_an_empty_window_has_no_rates(store: TelemetryStore) -> None:
    summary = store.window("eu", T0, T0 + 10)
    assert (summary.reports, summary.nodes, summary.span_s) == (0, (), 0.0)
    assert summary.request_rate() == 0.0
    assert summary.error_rate() is None
    assert summary.quantile("request", 0.99) is None
    assert summary.variant("canary").requests == 0
    assert summary.refusals() == []


def test_node_filter(store: TelemetryStore) -> None:
    store.add(report(node="n1", requests=3))
    store.add(report(node="n2", requests=4))
    assert store.window("eu", T0 - 1, T0, node="n2").requests == 4
    assert store.window("eu", T0 - 1, T0, node="n2").node == "n2"
    assert store.window("eu", T0 - 1, T0, node="n9").reports == 0


def test_variant_merges_only_the_intervals_of_the_asked_version(store: TelemetryStore) -> None:
    store.add(report(node="n1", seq=1, sent_at=T0 + 5, variants={
        "stable": variant(7, 100, impressions=80, clicks=8, latency_s=[0.001] * 100),
        "canary": variant(8, 10, errors=1, impressions=9, clicks=2, latency_s=[0.003] * 10),
    }))  # fmt: skip
    store.add(report(node="n2", seq=1, sent_at=T0 + 5, variants={
        "canary": variant(9, 5, impressions=5, clicks=1, latency_s=[0.009] * 5),
    }))  # fmt: skip
    store.add(report(node="n1", seq=2, sent_at=T0 + 10, variants={
        "canary": variant(8, 20, impressions=20, clicks=3, latency_s=[0.002] * 20),
    }))  # fmt: skip
    summary = store.window("eu", T0, T0 + 10)

    v8 = summary.variant("canary", 8)
    assert (v8.version, v8.requests, v8.errors, v8.impressions, v8.clicks) == (8, 30, 1, 29, 5)
    assert same(v8.latency, histogram(*[0.003] * 10, *[0.002] * 20))
    everything = summary.variant("canary")
    assert (everything.version, everything.requests) == (None, 35)  # two versions were seen
    stable = summary.variant("stable")
    assert (stable.version, stable.requests, stable.clicks) == (7, 100, 8)
    assert summary.variant("canary", 10).requests == 0
    with pytest.raises(MonitorQueryError, match="unknown variant"):
        summary.variant("blue")


def test_merging_never_changes_the_stored_reports(store: TelemetryStore) -> None:
    store.add(report(stages={"request": repeated(0.001, 5)},
                     variants={"stable": variant(7, 5, latency_s=[0.001] * 5)},
                     shadow_stats=ShadowStats(8, 5, 0, 4.0, repeated(0.002, 5))))  # fmt: skip
    first = store.window("eu", T0 - 1, T0)
    for _ in range(2):
        again = store.window("eu", T0 - 1, T0)
        assert again.stages == first.stages
        assert again.variant("stable").latency.total == 5
        assert again.shadow().latency.total == 5


def test_shadow_stats_by_version(store: TelemetryStore) -> None:
    store.add(report(node="n1", shadow_stats=ShadowStats(8, 10, 1, 6.3, repeated(0.002, 10))))
    store.add(report(node="n2", shadow_stats=ShadowStats(8, 20, 0, 15.0, repeated(0.001, 20))))
    store.add(report(node="n3", shadow_stats=ShadowStats(9, 7, 0, 7.0, repeated(0.001, 7))))
    summary = store.window("eu", T0 - 1, T0)
    shadow8 = summary.shadow(8)
    assert (shadow8.version, shadow8.requests, shadow8.errors) == (8, 30, 1)
    assert shadow8.mean_overlap() == pytest.approx(21.3 / 29)
    assert summary.shadow().requests == 37
    assert summary.shadow().version is None


def test_refusals_come_from_each_nodes_latest_report_in_the_window(
    store: TelemetryStore,
) -> None:
    bad8 = Refused(8, "bad_signature", "signature does not verify")
    bad9 = Refused(9, "bad_part", "ranker hash differs")
    store.add(report(node="n1", seq=1, sent_at=T0 + 5, refused=(bad8,)))
    store.add(report(node="n1", seq=2, sent_at=T0 + 10, refused=()))  # since loaded it fine
    store.add(report(node="n2", seq=1, sent_at=T0 + 10, refused=(bad8, bad9)))
    summary = store.window("eu", T0, T0 + 10)
    assert summary.refusals(8) == [("n2", bad8)]
    assert summary.refusals() == [("n2", bad8), ("n2", bad9)]
    assert store.window("eu", T0, T0 + 5).refusals(8) == [("n1", bad8)]


def test_bad_questions_are_refused_with_the_reason(store: TelemetryStore) -> None:
    summary = store.window("eu", T0, T0 + 10)
    with pytest.raises(MonitorQueryError, match="unknown stage 'latency'"):
        summary.quantile("latency", 0.5)
    with pytest.raises(MonitorQueryError, match=r"quantile must be within 0\.\.1"):
        summary.quantile("request", 1.5)
    with pytest.raises(MonitorQueryError, match="must be before"):
        store.window("eu", T0 + 10, T0 + 10)
    with pytest.raises(MonitorQueryError, match="finite"):
        store.window("eu", math.nan, T0)
    with pytest.raises(MonitorSettingsError):
        TelemetryStore(retention_s=0)
    with pytest.raises(MonitorSettingsError):
        TelemetryStore(max_nodes=0)


def test_nodes_report_their_latest_status(store: TelemetryStore, clock: FakeClock) -> None:
    refusal = Refused(9, "bad_signature", "no")
    store.add(report(region="us", node="b", seq=1, stable=7), received_at=T0 + 50)
    store.add(report(region="eu", node="a", seq=1, stable=7, ready=False), received_at=T0 + 50)
    store.add(report(region="eu", node="a", seq=2, sent_at=T0 + 5, stable=7, canary=8,
                     canary_percent=25, shadow=False, stale=True, refused=(refusal,),
                     spool_events=12), received_at=T0 + 55)  # fmt: skip
    assert store.regions() == ["eu", "us"]
    assert [(s.region, s.node) for s in store.nodes()] == [("eu", "a"), ("us", "b")]
    (status,) = store.nodes("eu")
    assert (status.stable, status.canary, status.canary_percent) == (7, 8, 25)
    assert (status.ready, status.stale, status.silent, status.restarted) == (
        True, True, False, False,
    )  # fmt: skip
    assert status.refused == (refusal,)
    assert status.spool_events == 12
    assert status.last_seen == T0 + 55
    assert store.nodes("asia") == []


def test_silence_goes_by_receive_time_not_the_edges_clock(
    store: TelemetryStore, clock: FakeClock
) -> None:
    # An edge whose clock is an hour behind is alive as long as its reports arrive.
    store.add(report(node="skewed", sent_at=T0 - 3600), received_at=clock.now)
    store.add(report(node="quiet", sent_at=T0 + 60), received_at=clock.now - 20)
    silent = {s.node: s.silent for s in store.nodes("eu")}
    assert silent == {"skewed": False, "quiet": True}  # 20 s > 3 intervals of 5 s
    clock.now += 15.5
    assert all(s.silent for s in store.nodes("eu"))


def test_a_restart_is_seen_from_a_new_start_time_or_a_seq_going_back(
    store: TelemetryStore, clock: FakeClock
) -> None:
    store.add(report(node="a", seq=5, started_at=T0 - 100))
    store.add(report(node="a", seq=6, started_at=T0 - 100))
    store.add(report(node="b", seq=5, started_at=T0 - 100))
    assert not any(s.restarted for s in store.nodes())
    store.add(report(node="a", seq=1, started_at=T0 + 30))  # new process
    store.add(report(node="b", seq=2, started_at=T0 - 100))  # counter reset
    assert [s.restarted for s in store.nodes()] == [True, True]
    clock.now += 901  # the restart has aged out of the retention
    store.add(report(node="a", seq=2, started_at=T0 + 30), received_at=clock.now)
    assert {s.node: s.restarted for s in store.nodes()} == {"a": False}  # b was forgotten


def test_the_same_report_twice_counts_once(store: TelemetryStore) -> None:
    store.add(report(seq=1, requests=10))
    store.add(report(seq=1, requests=10))
    assert store.window("eu", T0 - 1, T0).requests == 10
    assert store.duplicates == 1
    assert not store.nodes()[0].restarted


def test_retention_drops_old_reports_and_forgets_long_silent_nodes(clock: FakeClock) -> None:
    store = TelemetryStore(retention_s=100, clock=clock)
    store.add(report(node="a", seq=1, sent_at=T0, requests=1), received_at=T0)
    store.add(report(node="b", seq=1, sent_at=T0, requests=2), received_at=T0)
    clock.now = T0 + 80
    store.add(report(node="a", seq=2, sent_at=T0 + 80, requests=4))
    assert store.window("eu", T0 - 1, T0 + 80).requests == 7
    clock.now = T0 + 150  # T0 is past the retention; a's second report is not
    assert store.window("eu", T0 - 1, T0 + 150).requests == 4
    assert [s.node for s in store.nodes()] == ["a"]  # b was silent for the whole retention
    clock.now = T0 + 181
    assert store.regions() == []


def test_past_max_nodes_the_node_heard_from_least_recently_is_evicted(clock: FakeClock) -> None:
    store = TelemetryStore(max_nodes=3, clock=clock)
    for n, node in enumerate(("a", "b", "c")):
        store.add(report(node=node), received_at=T0 + n)
    store.add(report(node="a", seq=2), received_at=T0 + 3)  # a is fresh again; b is the oldest
    store.add(report(node="d"), received_at=T0 + 4)
    assert [s.node for s in store.nodes()] == ["a", "c", "d"]
    assert store.evicted == 1
    store.add(report(region="us", node="e"), received_at=T0 + 5)
    assert [(s.region, s.node) for s in store.nodes()] == [("eu", "a"), ("eu", "d"), ("us", "e")]


def test_a_flooding_node_holds_at_most_one_report_per_half_second_of_retention(
    clock: FakeClock,
) -> None:
    store = TelemetryStore(retention_s=10, min_spacing_s=0, clock=clock)
    for seq in range(1, 201):
        store.add(report(seq=seq, sent_at=T0 + seq / 100, requests=1))
    summary = store.window("eu", T0 - 10, T0 + 10)
    assert summary.reports == summary.requests == 20  # the newest 20
    store.add(report(seq=1, sent_at=T0 + 3, requests=1))  # seq 1 was dropped: not a duplicate
    assert store.duplicates == 0
