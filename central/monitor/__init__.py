"""The regional latency monitor: edge telemetry in, per-region figures out.

* :mod:`~central.monitor.store` — the reports of every node, merged over any window (pure)
* :mod:`~central.monitor.window` — :class:`WindowSummary`: what a window of reports adds up to
* :mod:`~central.monitor.service` — :class:`LatencyMonitor`: NATS in, answers to queries out
* :mod:`~central.monitor.metrics` — the figures as Prometheus metrics
* :mod:`~central.monitor.http` — central's ``/metrics`` endpoint
* :mod:`~central.monitor.figures` / :mod:`~central.monitor.query` — what ``proxima latency``
  asks and prints
* :mod:`~central.monitor.client` — asking a running monitor, or listening to telemetry directly
"""

from __future__ import annotations

from central.monitor.errors import MonitorError, MonitorQueryError, MonitorSettingsError
from central.monitor.service import LatencyMonitor, MonitorSettings
from central.monitor.store import NodeStatus, TelemetryStore, WindowSummary

__all__ = [
    "LatencyMonitor",
    "MonitorError",
    "MonitorQueryError",
    "MonitorSettings",
    "MonitorSettingsError",
    "NodeStatus",
    "TelemetryStore",
    "WindowSummary",
]
