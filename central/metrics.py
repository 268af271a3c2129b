"""Prometheus figures of the central roles besides the monitor: bridge, trainer, lake writer.

Each role keeps its own counters in a status object; a :class:`CentralCollector` reads
them when ``/metrics`` is scraped (``proxima central run --metrics-port``), so nothing is
counted twice and an idle role costs nothing. Counters are totals since the process
started; gauges say what holds now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Figure = tuple[str, str, str, Callable[[Any], float | None]]  # name, kind, help, read

BRIDGE_FIGURES: tuple[Figure, ...] = (
    ("proxima_bridge_forwarded", "counter", "Events Kafka acknowledged", lambda s: s.forwarded),
    ("proxima_bridge_dead_lettered", "counter", "Invalid messages sent to the dead-letter "
     "topic", lambda s: s.dead_lettered),
    ("proxima_bridge_acked", "counter", "JetStream messages acknowledged after Kafka had "
     "them", lambda s: s.acked),
    ("proxima_bridge_errors", "counter", "Failed pulls, produce rounds and acks",
     lambda s: s.errors),
    ("proxima_bridge_lag", "gauge", "JetStream messages not yet in Kafka", lambda s: s.lag),
    ("proxima_bridge_running", "gauge", "1 while forwarding", lambda s: float(s.running)),
)  # fmt: skip
TRAINER_FIGURES: tuple[Figure, ...] = (
    ("proxima_trainer_consumed", "counter", "Kafka records read", lambda s: s.consumed),
    ("proxima_trainer_bad_records", "counter", "Records that were not valid events",
     lambda s: s.bad_records),
    ("proxima_trainer_retrains", "counter", "Retrains finished or failed", lambda s: s.attempts),
    ("proxima_trainer_published", "counter", "Bundles published", lambda s: len(s.published)),
    ("proxima_trainer_training", "gauge", "1 while a retrain runs", lambda s: float(s.training)),
    ("proxima_trainer_caught_up", "gauge", "1 once the topic has been read to its end",
     lambda s: float(s.caught_up)),
)  # fmt: skip
LAKE_FIGURES: tuple[Figure, ...] = (
    ("proxima_lake_consumed", "counter", "Kafka records read", lambda s: s.consumed),
    ("proxima_lake_written", "counter", "Rows committed into the lake", lambda s: s.written),
    ("proxima_lake_invalid", "counter", "Records that were not valid events, skipped",
     lambda s: s.invalid),
    ("proxima_lake_duplicates", "counter", "Records the lake already held, ignored",
     lambda s: s.duplicates),
    ("proxima_lake_commits", "counter", "Commits (file sets made visible)", lambda s: s.commits),
    ("proxima_lake_compactions", "counter", "Compacted files written", lambda s: s.compacted),
)  # fmt: skip


class CentralCollector(Collector):
    """Reads ``status()`` of each role (a callable returning its status object)."""

    def __init__(self, roles: list[tuple[Callable[[], Any], tuple[Figure, ...]]]) -> None:
        self._roles = roles

    def collect(self) -> Iterator[Metric]:
        for status_of, figures in self._roles:
            status = status_of()
            for name, kind, help_text, read in figures:
                value = read(status)
                if value is None:
                    continue
                if kind == "counter":
                    yield CounterMetricFamily(name, help_text, value=float(value))
                else:
                    yield GaugeMetricFamily(name, help_text, value=float(value))


def central_registry(
    *,
    bridge: Callable[[], Any] | None = None,
    trainer: Callable[[], Any] | None = None,
    lake: Callable[[], Any] | None = None,
) -> CollectorRegistry:
    """A registry of the roles given (each a callable returning the role's status)."""
    roles: list[tuple[Callable[[], Any], tuple[Figure, ...]]] = []
    for status_of, figures in ((bridge, BRIDGE_FIGURES), (trainer, TRAINER_FIGURES),
                               (lake, LAKE_FIGURES)):  # fmt: skip
        if status_of is not None:
            roles.append((status_of, figures))
    registry = CollectorRegistry()  # collected at scrape time only: the roles may not exist yet
    registry.register(CentralCollector(roles))
    return registry
