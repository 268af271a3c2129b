"""The monitor's bounds: report spacing, node names per region, and bytes held."""

from __future__ import annotations

import dataclasses
import random
import sys
import tracemalloc

from central.monitor.store import TelemetryStore, report_bytes
from protocol.telemetry import (
    STAGES,
    VARIANTS,
    LatencyHistogram,
    Refused,
    ShadowStats,
    TelemetryReport,
    VariantStats,
    decode_report,
    encode_report,
)
from tests.central.monitor.reports import T0, FakeClock, report


def busy_histogram(rng: random.Random) -> LatencyHistogram:
    h = LatencyHistogram()
    h.counts = [rng.randrange(1_000, 1_000_000) for _ in h.counts]  # no small cached ints
    h.total = sum(h.counts)
    h.sum_s = rng.random()
    return h


def full_report(node: str = "n1", seq: int = 1, sent_at: float = T0) -> TelemetryReport:
    """Every stage, both variants, shadow stats and a refusal, decoded as the monitor does."""
    rng = random.Random(seq)
    built = dataclasses.replace(
        report(node=node, seq=seq, sent_at=sent_at, requests=1),
        stages={stage: busy_histogram(rng) for stage in STAGES},
        variants={v: VariantStats(7, 10, 1, 5, 2, busy_histogram(rng)) for v in VARIANTS},
        shadow_stats=ShadowStats(8, 10, 0, 6.5, busy_histogram(rng)),
        refused=(Refused(9, "bad_signature", "the bundle's signature does not verify"),),
        events={"accepted": 1_000, "duplicate": 2_000, "rejected": 3_000},
    )
    return decode_report(encode_report(built))


_TEMPLATE = encode_report(full_report())


def fresh_report(node: str, seq: int, sent_at: float) -> TelemetryReport:
    """A full report of its own objects, as each decoded message is (quicker to build)."""
    decoded = decode_report(_TEMPLATE)
    return dataclasses.replace(decoded, node=node, seq=seq, sent_at_ms=round(sent_at * 1000))


def deep_size(value: object, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if id(value) in seen or value is None or isinstance(value, bool):
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, list | tuple):
        size += sum(deep_size(item, seen) for item in value)
    elif hasattr(value, "__slots__") or hasattr(value, "__dict__"):
        names = getattr(value, "__slots__", ()) or vars(value)
        size += sum(deep_size(getattr(value, name, None), seen) for name in names)
    return size


def test_the_byte_estimate_of_a_report_errs_high_but_not_wildly() -> None:
    for decoded in (full_report(), decode_report(encode_report(report()))):
        real = deep_size(decoded)
        assert real <= report_bytes(decoded) <= 3 * real


def test_a_node_reporting_faster_than_the_spacing_is_dropped_and_counted() -> None:
    clock = FakeClock(T0)
    store = TelemetryStore(min_spacing_s=1.0, clock=clock)
    outcomes = []
    for step in range(50):  # every quarter second for 12.5 s
        clock.now = T0 + step * 0.25
        outcomes.append(store.add(report(seq=step + 1, sent_at=clock.now, requests=1)))
    assert outcomes.count("accepted") == 13  # one a second
    assert outcomes.count("too_frequent") == store.too_frequent == 37
    assert store.window("eu", T0 - 1, T0 + 13).requests == 13
    clock.now += 1.0
    assert store.add(report(seq=99, sent_at=clock.now)) == "accepted"


def test_a_region_holds_a_bounded_number_of_node_names() -> None:
    clock = FakeClock(T0)
    store = TelemetryStore(max_nodes_per_region=3, clock=clock)
    outcomes = [store.add(report(node=f"n{n}")) for n in range(10)]
    assert outcomes == ["accepted"] * 3 + ["region_full"] * 7
    assert store.nodes_refused == 7
    assert [s.node for s in store.nodes("eu")] == ["n0", "n1", "n2"]  # the real ones stay
    assert store.add(report(region="us", node="n9")) == "accepted"
    clock.now += 5
    assert store.add(report(node="n0", seq=2, sent_at=T0 + 5)) == "accepted"


def test_past_max_bytes_the_oldest_reports_of_all_go_first() -> None:
    clock = FakeClock(T0)
    one = report_bytes(full_report("a"))
    store = TelemetryStore(max_bytes=20 * one, clock=clock)
    for step in range(10):
        clock.now = T0 + 5 * step
        for node in ("a", "b", "c", "d", "e"):
            store.add(full_report(node, seq=step + 1, sent_at=clock.now))
        assert store.bytes <= store.max_bytes
    assert store.trimmed == 50 - 20
    assert [s.node for s in store.nodes()] == ["a", "b", "c", "d", "e"]  # no node forgotten
    early = store.window("eu", T0 - 1, T0 + 5 * 5)
    late = store.window("eu", T0 + 5 * 5, T0 + 5 * 9)
    assert (early.reports, late.reports) == (0, 20)  # the newest four rounds
    assert store.bytes == 20 * one


def test_a_flood_of_names_and_reports_stays_within_the_byte_bound() -> None:
    clock = FakeClock(T0)
    budget = 1 << 20
    nodes = 20
    store = TelemetryStore(max_bytes=budget, max_nodes_per_region=nodes, clock=clock)
    one = report_bytes(fresh_report("n0", 1, T0))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for node in range(nodes):
            store.add(fresh_report(f"n{node}", 1, T0))
        for node in range(nodes, 10_000):  # invented names beyond the cap: refused
            store.add(report(node=f"n{node}"))
        for step in range(1, 30):  # the admitted ones flood a report a second each
            clock.now = T0 + step
            for node in range(nodes):
                store.add(fresh_report(f"n{node}", step + 1, clock.now))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.nodes_refused == 10_000 - nodes
    assert store.bytes <= budget
    assert store.trimmed > 0
    # the budget, plus each node's latest report kept for its status, and bookkeeping
    assert held <= budget + nodes * one + (1 << 20)
    assert held < 30 * nodes * one / 5  # a fifth of what the unbounded store would hold
