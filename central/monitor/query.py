"""What ``proxima latency`` asks the monitor, and how durations are written on the command line.

The request is JSON on :data:`~protocol.subjects.MONITOR_REQUEST_SUBJECT`:
``{"region": "eu" | null, "window_s": 60.0, "nodes": false}``. The reply is the summary of
:func:`central.monitor.figures.latency_summary`, or ``{"error": {"code", "message", "field"}}``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from central.monitor.errors import MonitorQueryError
from protocol.errors import ProtocolError
from protocol.subjects import check_token

MAX_WINDOW_S: Final = 86_400.0
MAX_QUERY_BYTES: Final = 4096
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class LatencyQuery:
    region: str | None = None  # None: every region
    window_s: float = 60.0
    nodes: bool = False  # add per-node figures

    def __post_init__(self) -> None:
        if self.region is not None:
            try:
                check_token(self.region, "region")
            except ProtocolError as exc:
                raise MonitorQueryError(exc.message, field="region") from exc
        window = self.window_s
        if isinstance(window, bool) or not isinstance(window, int | float):
            raise MonitorQueryError("window_s must be a number of seconds", field="window_s")
        if not (math.isfinite(window) and 0 < window <= MAX_WINDOW_S):
            raise MonitorQueryError(
                f"window must be more than 0 s and at most {MAX_WINDOW_S:.0f} s, got {window}",
                field="window_s",
            )
        if not isinstance(self.nodes, bool):
            raise MonitorQueryError("nodes must be true or false", field="nodes")

    def encode(self) -> bytes:
        return json.dumps(
            {"region": self.region, "window_s": self.window_s, "nodes": self.nodes}
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> LatencyQuery:
        if len(data) > MAX_QUERY_BYTES:
            raise MonitorQueryError(f"a query is at most {MAX_QUERY_BYTES} bytes")
        try:
            body: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MonitorQueryError(f"a query must be a JSON object: {exc}") from exc
        if not isinstance(body, dict):
            raise MonitorQueryError("a query must be a JSON object")
        unknown = sorted(set(body) - {"region", "window_s", "nodes"})
        if unknown:
            raise MonitorQueryError(f"unknown query keys {unknown[:5]}", field=str(unknown[0]))
        return cls(
            region=body.get("region"),
            window_s=body.get("window_s", 60.0),
            nodes=body.get("nodes", False),
        )


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``250ms``, ``60s``, ``5m``, ``1.5h``, or a bare number of seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise MonitorQueryError(
            f"not a duration: {text!r:.40} (write e.g. 60s, 5m, 1h or 250ms)", field="window"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]
