"""Outcomes in the central pipeline: the lake's attribution recomputed on a schedule.

``proxima central run`` (with the lake) runs an :class:`OutcomesService`: every
``interval_s`` it attributes the last ``days`` of the lake (:func:`attribute`, out of core,
in a worker thread) and keeps the resulting :class:`~central.outcomes.report.Report`; an
:class:`OutcomesCollector` exports it on ``/metrics`` — per region, bundle and variant the
sessions, CTR, conversion rate and revenue per session with their interval bounds, and the
lift over the holdout and over the stable version — which the Grafana dashboard plots.
Everything is recomputed from the lake, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from central.lake.layout import open_lake
from central.outcomes.attribution import AttributionSettings, attribute
from central.outcomes.report import METRICS, Report, build_report
from central.outcomes.stats import Interval
from protocol.errors import ProximaError
from runtime.service import LoopService

log = logging.getLogger("proxima.central.outcomes")


@dataclass(frozen=True, slots=True)
class OutcomesSettings:
    lake_dir: Path
    interval_s: float = 300.0
    days: int = 14
    attribution: AttributionSettings = field(default_factory=AttributionSettings)


class OutcomesService(LoopService):
    """Re-attributes the lake every ``interval_s`` and keeps the last report."""

    name = "outcomes"

    def __init__(self, settings: OutcomesSettings) -> None:
        self.settings = settings
        self.report: Report | None = None
        self.computed_at: float | None = None
        self.failures = 0
        super().__init__()

    def compute(self) -> Report | None:
        """One attribution of the lake's last ``days`` (None while the lake is empty)."""
        root = self.settings.lake_dir
        if not root.is_dir():
            return None
        layout = open_lake(root)
        dates = layout.days()[-self.settings.days :]
        files = layout.data_files(dates)
        if not files:
            return None
        return build_report(attribute(files, self.settings.attribution))

    async def _run(self) -> None:
        while True:
            try:
                report = await asyncio.to_thread(self.compute)
            except ProximaError as exc:
                self.failures += 1
                log.warning("outcomes: attribution failed: %s [%s]", exc.message, exc.code)
            else:
                if report is not None:
                    self.report, self.computed_at = report, time.time()
            await asyncio.sleep(self.settings.interval_s)


class OutcomesCollector(Collector):
    def __init__(self, service: OutcomesService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        report = self._service.report
        labels = ["region", "bundle", "variant"]
        sessions = GaugeMetricFamily(
            "proxima_outcome_sessions", "Sessions of the arm in the lake's window", labels=labels
        )
        figures = GaugeMetricFamily(
            "proxima_outcome_rate",
            "CTR, conversion rate and revenue per session of the arm, with interval bounds",
            labels=[*labels, "metric", "bound"],
        )
        lifts = GaugeMetricFamily(
            "proxima_outcome_lift",
            "Relative lift of the arm over the holdout or the stable version, with bounds",
            labels=[*labels, "metric", "against", "bound"],
        )
        age = GaugeMetricFamily(
            "proxima_outcome_computed_at", "Unix time of the last attribution of the lake"
        )
        if report is not None:
            for arm in report.arms:
                arm_labels = [arm.region, str(arm.bundle), arm.variant]
                sessions.add_metric(arm_labels, arm.sessions)
                for metric in METRICS:
                    interval = arm.figures[metric]
                    for bound, value in _bounds(interval):
                        figures.add_metric([*arm_labels, metric, bound], value)
                for against, found in (("holdout", arm.lift_vs_holdout),
                                       ("stable", arm.lift_vs_stable)):  # fmt: skip
                    for metric, interval in found.items():
                        for bound, value in _bounds(interval):
                            lifts.add_metric([*arm_labels, metric, against, bound], value)
            age.add_metric([], self._service.computed_at or 0.0)
        yield from (sessions, figures, lifts, age)


def _bounds(interval: Interval) -> list[tuple[str, float]]:
    named = (("estimate", interval.estimate), ("low", interval.low), ("high", interval.high))
    return [(bound, value) for bound, value in named if math.isfinite(value)]
