"""Errors of the latency monitor.

A subtree of :class:`protocol.errors.ProximaError` (the whole tree is drawn there)::

    ProximaError                    (protocol.errors)
    └── CentralError                (central.errors)
        └── MonitorError            the monitor cannot do what was asked (500)
            ├── MonitorQueryError   a query names an unknown stage or variant, a bad
            │                       quantile, region or window (400)
            └── MonitorSettingsError  monitor settings out of range, or its port is taken (400)
"""

from __future__ import annotations

from central.errors import CentralError


class MonitorError(CentralError):
    code = "monitor_error"
    status = 500


class MonitorQueryError(MonitorError):
    code = "bad_monitor_query"
    status = 400


class MonitorSettingsError(MonitorError):
    code = "bad_monitor_settings"
    status = 400
