"""The monitor's memory: each node's recent telemetry reports, and what they add up to.

Pure bookkeeping, no I/O, no locks: one event loop feeds it and reads it (the monitor's
NATS subscription, its metrics and request handlers, a rollout controller in the same
process).

Reports carry counts for their own interval only, so any set of them adds up by plain
summation, and their latency histograms share one bucket layout, so they merge exactly:
a window over a region is the merge of every report its nodes sent inside it. A report
belongs to the window (since, until] when its ``sent_at_ms / 1000`` does; that is the
edge's clock. Whether a node is silent, and how long a report is kept, go by the time the
report was *received* (this process's clock), so an edge with a wrong clock still shows
up as alive or silent correctly.

Bounds, against edges that flood or invent names as much as against many honest ones:

* spacing: a report received less than ``min_spacing_s`` after the node's last one is
  dropped and counted (``too_frequent``); edges report every few seconds (0 turns the
  check off, for replays and tests, and a node then keeps at most two reports a second);
* names: a region holds at most ``max_nodes_per_region`` nodes (a new name beyond that is
  refused and counted, ``nodes_refused``, so invented names cannot push real nodes out) and
  the store ``max_nodes`` (past it the node heard from least recently is evicted);
* bytes: the reports held add up to at most ``max_bytes`` by :func:`report_bytes` (an
  estimate that errs high: 33 KB for a report with every stage, both variants and shadow
  stats whose counts are all large, 29 KB measured; far less when most counts are 0);
  past it the oldest reports of all are let go first (``trimmed``), which shortens the
  history every window can see rather than forgetting whole nodes;
* time: a node keeps the reports received within ``retention_s``; a node not heard from
  for ``retention_s`` is forgotten.

Each node's latest report is also kept for its status, outside ``max_bytes`` once its
history has been trimmed away: at most ``max_nodes`` of them.
:mod:`central.monitor.window` does the adding up.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from central.monitor.errors import MonitorQueryError, MonitorSettingsError
from central.monitor.window import WindowSummary, summarise
from protocol.telemetry import (
    TELEMETRY_INTERVAL_S,
    Refused,
    TelemetryReport,
)

# What report_bytes adds up: measured with a deep getsizeof of decoded reports (see the
# tests), rounded up, counts taken as distinct int objects.
_REPORT_BYTES: Final = 1_200  # the report, its strings and scalars, its empty dicts
_HISTOGRAM_BYTES: Final = 2_800  # a LatencyHistogram: its 69 counts as a list of ints
_ENTRY_BYTES: Final = 160  # a dict entry: its key string and a small value
_VARIANT_BYTES: Final = 400  # VariantStats / ShadowStats without their histogram
_REFUSAL_BYTES: Final = 300  # Refused, without its message
_FLOOD_SPACING_S: Final = 0.5  # without a spacing check, a node's history holds one per this

NodeKey = tuple[str, str]  # (region, node)

__all__ = ["AddOutcome", "NodeStatus", "TelemetryStore", "WindowSummary", "report_bytes"]

AddOutcome = Literal["accepted", "duplicate", "too_frequent", "region_full"]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A node as its latest report describes it."""

    region: str
    node: str
    last_seen: float  # unix seconds when its latest report was received
    silent: bool  # nothing received for longer than the store's ``silent_after_s``
    stale: bool  # the node itself says it serves a bundle it could not confirm with the bus
    ready: bool
    stable: int | None
    canary: int | None
    canary_percent: int
    shadow: bool
    refused: tuple[Refused, ...]
    spool_events: int
    restarted: bool  # it restarted (new started_at_ms, or seq went back) within the retention


def report_bytes(report: TelemetryReport) -> int:
    """The memory a decoded report holds, estimated from its shape (erring high)."""
    histograms = len(report.stages)
    size = _REPORT_BYTES + len(report.stages) * _ENTRY_BYTES + len(report.events) * _ENTRY_BYTES
    size += len(report.variants) * (_ENTRY_BYTES + _VARIANT_BYTES)
    histograms += len(report.variants)
    if report.shadow_stats is not None:
        size += _VARIANT_BYTES
        histograms += 1
    size += sum(_REFUSAL_BYTES + len(r.code) + len(r.message) for r in report.refused)
    size += len(report.region) + len(report.node)
    return size + histograms * _HISTOGRAM_BYTES


class _History:
    __slots__ = ("bytes", "keys", "last_seen", "latest", "received", "restarted_at")

    def __init__(self, report: TelemetryReport, received_at: float, maxlen: int) -> None:
        self.latest = report
        self.last_seen = received_at
        self.received: deque[tuple[float, TelemetryReport]] = deque(maxlen=maxlen)
        self.keys: set[tuple[int, int]] = set()  # (started_at_ms, seq) of what is held
        self.restarted_at: float | None = None
        self.bytes = 0  # report_bytes of what ``received`` holds


class TelemetryStore:
    def __init__(
        self,
        *,
        retention_s: float = 900.0,
        silent_after_s: float = 3 * TELEMETRY_INTERVAL_S,
        max_nodes: int = 10_000,
        max_nodes_per_region: int = 1_000,
        max_bytes: int = 256 << 20,
        min_spacing_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(retention_s) and retention_s > 0):
            raise MonitorSettingsError("retention_s must be positive", field="retention_s")
        if not (math.isfinite(silent_after_s) and silent_after_s > 0):
            raise MonitorSettingsError("silent_after_s must be positive", field="silent_after_s")
        if not (math.isfinite(min_spacing_s) and 0 <= min_spacing_s <= retention_s):
            raise MonitorSettingsError(
                "min_spacing_s must be within 0..retention_s", field="min_spacing_s"
            )
        for name, value in (
            ("max_nodes", max_nodes),
            ("max_nodes_per_region", max_nodes_per_region),
            ("max_bytes", max_bytes),
        ):
            if value < 1:
                raise MonitorSettingsError(f"{name} must be at least 1", field=name)
        self.retention_s = retention_s
        self.silent_after_s = silent_after_s
        self.max_nodes = max_nodes
        self.max_nodes_per_region = max_nodes_per_region
        self.max_bytes = max_bytes
        self.min_spacing_s = min_spacing_s
        self._clock = clock
        self._maxlen = max(16, math.ceil(retention_s / max(min_spacing_s, _FLOOD_SPACING_S)))
        self._recency: OrderedDict[NodeKey, _History] = OrderedDict()  # least recent first
        self._by_region: dict[str, dict[str, _History]] = {}
        # every held report in the order it was added (entries of reports let go since are
        # skipped when they reach the front): what goes first when max_bytes is reached
        self._arrivals: deque[tuple[_History, TelemetryReport]] = deque()
        self.bytes = 0  # report_bytes of every report held in the histories
        self.duplicates = 0  # reports dropped because the same (start, seq) was held
        self.evicted = 0  # nodes dropped to stay within max_nodes
        self.too_frequent = 0  # reports dropped for arriving within min_spacing_s
        self.nodes_refused = 0  # reports of new nodes refused: their region was full
        self.trimmed = 0  # reports let go early to stay within max_bytes

    def add(self, report: TelemetryReport, *, received_at: float | None = None) -> AddOutcome:
        now = self._clock()
        received = now if received_at is None else received_at
        key = (report.region, report.node)
        history = self._recency.get(key)
        if history is None:
            self._forget_silent(now)
            if len(self._by_region.get(report.region, ())) >= self.max_nodes_per_region:
                self.nodes_refused += 1
                return "region_full"
            while len(self._recency) >= self.max_nodes:
                self._drop(next(iter(self._recency)))
                self.evicted += 1
            history = _History(report, received, self._maxlen)
            self._recency[key] = history
            self._by_region.setdefault(report.region, {})[report.node] = history
        else:
            if (report.started_at_ms, report.seq) in history.keys:
                self.duplicates += 1
                return "duplicate"
            if received - history.last_seen < self.min_spacing_s:
                self.too_frequent += 1
                return "too_frequent"
            held = history.latest
            if report.started_at_ms != held.started_at_ms or report.seq < held.seq:
                history.restarted_at = received
            history.latest = report
            history.last_seen = max(history.last_seen, received)
            self._recency.move_to_end(key)
        if len(history.received) == history.received.maxlen:
            self._pop_oldest(history)
        history.received.append((received, report))
        history.keys.add(_identity(report))
        size = report_bytes(report)
        history.bytes += size
        self.bytes += size
        self._arrivals.append((history, report))
        self._trim(history, now)
        self._within_bytes()
        return "accepted"

    def regions(self) -> list[str]:
        self._forget_silent(self._clock())
        return sorted(self._by_region)

    def nodes(self, region: str | None = None) -> list[NodeStatus]:
        now = self._clock()
        self._forget_silent(now)
        return [self._status(history, now) for history in self._histories(region)]

    def latest_report(self, region: str, node: str) -> TelemetryReport | None:
        history = self._by_region.get(region, {}).get(node)
        return history.latest if history is not None else None

    def window(
        self, region: str, since: float, until: float | None = None, *, node: str | None = None
    ) -> WindowSummary:
        now = self._clock()
        end = now if until is None else until
        for name, value in (("since", since), ("until", end)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise MonitorQueryError(f"{name} must be unix seconds", field=name)
            if not math.isfinite(value):
                raise MonitorQueryError(f"{name} must be finite", field=name)
        if not since < end:
            raise MonitorQueryError(f"since ({since}) must be before until ({end})", field="since")
        self._forget_silent(now)
        kept_from = now - self.retention_s
        picked: list[TelemetryReport] = []
        for history in self._histories(region):
            if node is not None and history.latest.node != node:
                continue
            picked.extend(
                report
                for received, report in history.received
                if received >= kept_from and since < report.sent_at_ms / 1000 <= end
            )
        return summarise(region, node, since, end, picked)

    # -- internals ---------------------------------------------------------------------

    def _histories(self, region: str | None) -> Iterator[_History]:
        regions = sorted(self._by_region) if region is None else [region]
        for name in regions:
            nodes = self._by_region.get(name, {})
            for node in sorted(nodes):
                yield nodes[node]

    def _status(self, history: _History, now: float) -> NodeStatus:
        report = history.latest
        restarted_at = history.restarted_at
        return NodeStatus(
            region=report.region,
            node=report.node,
            last_seen=history.last_seen,
            silent=now - history.last_seen > self.silent_after_s,
            stale=report.stale,
            ready=report.ready,
            stable=report.stable,
            canary=report.canary,
            canary_percent=report.canary_percent,
            shadow=report.shadow,
            refused=report.refused,
            spool_events=report.spool_events,
            restarted=restarted_at is not None and restarted_at >= now - self.retention_s,
        )

    def _trim(self, history: _History, now: float) -> None:
        kept_from = now - self.retention_s
        while history.received and history.received[0][0] < kept_from:
            self._pop_oldest(history)

    def _pop_oldest(self, history: _History) -> None:
        _, report = history.received.popleft()
        history.keys.discard(_identity(report))
        size = report_bytes(report)
        history.bytes -= size
        self.bytes -= size

    def _within_bytes(self) -> None:
        """Lets the oldest reports of all go until the held ones fit in ``max_bytes``."""
        arrivals = self._arrivals
        while arrivals:
            history, report = arrivals[0]
            held = bool(history.received) and history.received[0][1] is report
            if held and self.bytes <= self.max_bytes:
                return
            arrivals.popleft()
            if held:
                self._pop_oldest(history)
                self.trimmed += 1

    def _forget_silent(self, now: float) -> None:
        """Forgets the nodes not heard from for the whole retention (least recent first)."""
        kept_from = now - self.retention_s
        while self._recency:
            key, history = next(iter(self._recency.items()))
            if history.last_seen >= kept_from:
                return
            self._drop(key)

    def _drop(self, key: NodeKey) -> None:
        history = self._recency.pop(key)
        self.bytes -= history.bytes
        history.bytes = 0
        history.received.clear()
        history.keys.clear()
        region, node = key
        nodes = self._by_region[region]
        del nodes[node]
        if not nodes:
            del self._by_region[region]


def _identity(report: TelemetryReport) -> tuple[int, int]:
    return report.started_at_ms, report.seq
