"""Edge telemetry: what every edge publishes on ``telemetry.<region>.<node>`` every few seconds.

A report covers one interval (``interval_s`` ending at ``sent_at_ms``) and carries counts
*for that interval only*, so reports from many nodes and many intervals add up by plain
summation, and a lost report loses one interval, not the meaning of the ones after it.

Latency is kept in :class:`LatencyHistogram`: fixed geometric buckets (each bound 25%
above the one before, 10 µs to ~30 s) shared by every node and version, so histograms
merge exactly and any percentile of a region is known to within one bucket (±12.5%).

Wire form: one msgpack map (``encode_report`` / ``decode_report``); decoding validates
every field and raises :class:`TelemetryError` naming the first one that is wrong.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgpack

from protocol.errors import ProtocolError

TELEMETRY_SCHEMA: Final = 1
TELEMETRY_INTERVAL_S: Final = 5.0
STAGES: Final = ("window", "candidates", "features", "inference", "rules", "total", "request")
VARIANTS: Final = ("stable", "canary")
Variant = Literal["stable", "canary"]

BUCKET_BASE_S: Final = 1e-5
BUCKET_GROWTH: Final = 1.25
BUCKET_BOUNDS: Final[tuple[float, ...]] = tuple(BUCKET_BASE_S * BUCKET_GROWTH**i for i in range(68))
_OVERFLOW: Final = len(BUCKET_BOUNDS)  # index of the bucket above the last bound
_MAX_COUNT: Final = 2**53
MAX_REPORT_BYTES: Final = 256 * 1024


class TelemetryError(ProtocolError):
    code = "bad_telemetry"


class LatencyHistogram:
    """Counts of observations per fixed bucket; bucket ``i`` holds (bound[i-1], bound[i]]."""

    __slots__ = ("counts", "sum_s", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_OVERFLOW + 1)
        self.total = 0
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKET_BOUNDS, seconds)] += 1
        self.total += 1
        self.sum_s += seconds

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        for index, count in enumerate(other.counts):
            if count:
                self.counts[index] += count
        self.total += other.total
        self.sum_s += other.sum_s
        return self

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in seconds, interpolated within its bucket; None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within 0..1, got {q}")
        if self.total == 0:
            return None
        rank = q * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            if not count:
                continue
            if seen + count >= rank:
                low, high = bucket_range(index)
                return low + (high - low) * max(rank - seen, 0.0) / count
            seen += count
        return bucket_range(_OVERFLOW)[1]  # pragma: no cover - rounding at q == 1

    def mean(self) -> float | None:
        return self.sum_s / self.total if self.total else None

    def to_wire(self) -> dict[str, Any]:
        buckets = {index: count for index, count in enumerate(self.counts) if count}
        return {"n": self.total, "sum": self.sum_s, "b": buckets}

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> LatencyHistogram:
        body = _map(raw, where, {"n", "sum", "b"})
        histogram = cls()
        histogram.total = _count(body["n"], f"{where}.n")
        histogram.sum_s = _number(body["sum"], f"{where}.sum")
        buckets = body["b"]
        if not isinstance(buckets, dict):
            raise TelemetryError(f"{where}.b must be a map of bucket index to count", field=where)
        for index, count in buckets.items():
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= _OVERFLOW:
                raise TelemetryError(f"{where}.b has a bad bucket index {index!r:.20}", field=where)
            histogram.counts[index] = _count(count, f"{where}.b[{index}]")
        if sum(histogram.counts) != histogram.total:
            raise TelemetryError(f"{where}: bucket counts do not add up to n", field=where)
        return histogram

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LatencyHistogram) and (
            self.counts,
            self.total,
            self.sum_s,
        ) == (other.counts, other.total, other.sum_s)

    def __repr__(self) -> str:
        return f"LatencyHistogram(total={self.total}, p50={self.quantile(0.5)})"


def bucket_range(index: int) -> tuple[float, float]:
    """The (low, high] seconds of bucket ``index`` (the overflow bucket ends at twice the top)."""
    low = BUCKET_BOUNDS[index - 1] if index > 0 else 0.0
    high = BUCKET_BOUNDS[index] if index < _OVERFLOW else BUCKET_BOUNDS[-1] * 2
    return low, high


def bucket_of(seconds: float) -> int:
    return bisect.bisect_left(BUCKET_BOUNDS, seconds)


@dataclass(slots=True)
class VariantStats:
    """One variant's share of an interval on one node (or merged over many)."""

    version: int | None = None
    requests: int = 0  # recommendation answers given with this variant's bundle
    errors: int = 0  # answers this variant failed to give (the edge fell back or answered 5xx)
    impressions: int = 0  # impression events whose request_id names this variant
    clicks: int = 0  # click events whose request_id names this variant
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # total per answer

    def merge(self, other: VariantStats) -> VariantStats:
        self.requests += other.requests
        self.errors += other.errors
        self.impressions += other.impressions
        self.clicks += other.clicks
        self.latency.merge(other.latency)
        return self

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "latency": self.latency.to_wire(),
        }

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> VariantStats:
        body = _map(
            raw, where, {"version", "requests", "errors", "impressions", "clicks", "latency"}
        )
        return cls(
            version=_version(body["version"], f"{where}.version"),
            requests=_count(body["requests"], f"{where}.requests"),
            errors=_count(body["errors"], f"{where}.errors"),
            impressions=_count(body["impressions"], f"{where}.impressions"),
            clicks=_count(body["clicks"], f"{where}.clicks"),
            latency=LatencyHistogram.from_wire(body["latency"], f"{where}.latency"),
        )


@dataclass(slots=True)
class ShadowStats:
    """The canary scored on live requests without being served (the shadow step)."""

    version: int | None = None
    requests: int = 0
    errors: int = 0
    overlap_sum: float = 0.0  # sum over requests of |top-k stable ∩ top-k canary| / k
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # canary ranking time

    def merge(self, other: ShadowStats) -> ShadowStats:
        self.requests += other.requests
        self.errors += other.errors
        self.overlap_sum += other.overlap_sum
        self.latency.merge(other.latency)
        return self

    def mean_overlap(self) -> float | None:
        scored = self.requests - self.errors
        return self.overlap_sum / scored if scored > 0 else None

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "overlap_sum": self.overlap_sum,
            "latency": self.latency.to_wire(),
        }

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> ShadowStats:
        body = _map(raw, where, {"version", "requests", "errors", "overlap_sum", "latency"})
        return cls(
            version=_version(body["version"], f"{where}.version"),
            requests=_count(body["requests"], f"{where}.requests"),
            errors=_count(body["errors"], f"{where}.errors"),
            overlap_sum=_number(body["overlap_sum"], f"{where}.overlap_sum"),
            latency=LatencyHistogram.from_wire(body["latency"], f"{where}.latency"),
        )


@dataclass(frozen=True, slots=True)
class Refused:
    version: int
    code: str
    message: str


@dataclass(slots=True)
class TelemetryReport:
    region: str
    node: str
    seq: int  # 1, 2, … per node start; a gap means a lost report
    started_at_ms: int  # when the node started: a change means it restarted
    sent_at_ms: int
    interval_s: float  # the span these counts cover, ending at sent_at_ms
    ready: bool = False
    stale: bool = False
    stable: int | None = None  # bundle versions loaded now
    canary: int | None = None
    canary_percent: int = 0
    shadow: bool = False
    refused: tuple[Refused, ...] = ()  # versions this node refused to load, with why
    requests: int = 0  # HTTP requests of every route
    errors: int = 0  # 5xx answers
    overloaded: int = 0  # 429/503 refusals before work
    stages: dict[str, LatencyHistogram] = field(default_factory=dict)
    variants: dict[str, VariantStats] = field(default_factory=dict)
    shadow_stats: ShadowStats | None = None
    events: dict[str, int] = field(default_factory=dict)  # accepted / duplicate / rejected
    spool_events: int = 0
    spool_bytes: int = 0
    publish_lag_s: float = 0.0

    def encode(self) -> bytes:
        return encode_report(self)


def encode_report(report: TelemetryReport) -> bytes:
    body = {
        "schema": TELEMETRY_SCHEMA,
        "region": report.region,
        "node": report.node,
        "seq": report.seq,
        "started_at_ms": report.started_at_ms,
        "sent_at_ms": report.sent_at_ms,
        "interval_s": report.interval_s,
        "ready": report.ready,
        "stale": report.stale,
        "bundle": {
            "stable": report.stable,
            "canary": report.canary,
            "canary_percent": report.canary_percent,
            "shadow": report.shadow,
        },
        "refused": [[r.version, r.code, r.message] for r in report.refused],
        "requests": report.requests,
        "errors": report.errors,
        "overloaded": report.overloaded,
        "stages": {name: h.to_wire() for name, h in report.stages.items()},
        "variants": {name: v.to_wire() for name, v in report.variants.items()},
        "shadow_stats": report.shadow_stats.to_wire() if report.shadow_stats else None,
        "events": dict(report.events),
        "spool": [report.spool_events, report.spool_bytes, report.publish_lag_s],
    }
    return bytes(msgpack.packb(body, use_bin_type=True))


_TOP_KEYS: Final = frozenset(
    {
        "schema", "region", "node", "seq", "started_at_ms", "sent_at_ms", "interval_s", "ready",
        "stale", "bundle", "refused", "requests", "errors", "overloaded", "stages", "variants",
        "shadow_stats", "events", "spool",
    }
)  # fmt: skip


def decode_report(data: bytes) -> TelemetryReport:
    from protocol.subjects import check_token

    if len(data) > MAX_REPORT_BYTES:
        raise TelemetryError(f"telemetry report over {MAX_REPORT_BYTES} bytes")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise TelemetryError(f"telemetry is not valid msgpack: {exc}") from exc
    body = _map(raw, "report", _TOP_KEYS)
    if body["schema"] != TELEMETRY_SCHEMA:
        raise TelemetryError(f"unknown telemetry schema {body['schema']!r:.20}", field="schema")
    try:
        region = check_token(body["region"], "region")
        node = check_token(body["node"], "node")
    except ProtocolError as exc:
        raise TelemetryError(exc.message, field=exc.field) from exc
    bundle = _map(body["bundle"], "bundle", {"stable", "canary", "canary_percent", "shadow"})
    percent = _count(bundle["canary_percent"], "bundle.canary_percent")
    if percent > 100:
        raise TelemetryError("bundle.canary_percent must be 0-100", field="bundle.canary_percent")
    refused = body["refused"]
    if not isinstance(refused, list) or len(refused) > 64:
        raise TelemetryError("refused must be a list of at most 64 entries", field="refused")
    spool = body["spool"]
    if not isinstance(spool, list) or len(spool) != 3:
        raise TelemetryError("spool must be [events, bytes, lag_s]", field="spool")
    events = _map(body["events"], "events", None)
    stages = _map(body["stages"], "stages", None)
    variants = _map(body["variants"], "variants", None)
    return TelemetryReport(
        region=region,
        node=node,
        seq=_count(body["seq"], "seq"),
        started_at_ms=_count(body["started_at_ms"], "started_at_ms"),
        sent_at_ms=_count(body["sent_at_ms"], "sent_at_ms"),
        interval_s=_number(body["interval_s"], "interval_s"),
        ready=_bool(body["ready"], "ready"),
        stale=_bool(body["stale"], "stale"),
        stable=_version(bundle["stable"], "bundle.stable"),
        canary=_version(bundle["canary"], "bundle.canary"),
        canary_percent=percent,
        shadow=_bool(bundle["shadow"], "bundle.shadow"),
        refused=tuple(_refused(entry, n) for n, entry in enumerate(refused)),
        requests=_count(body["requests"], "requests"),
        errors=_count(body["errors"], "errors"),
        overloaded=_count(body["overloaded"], "overloaded"),
        stages={
            _known(name, STAGES, "stages"): LatencyHistogram.from_wire(h, f"stages.{name}")
            for name, h in stages.items()
        },
        variants={
            _known(name, VARIANTS, "variants"): VariantStats.from_wire(v, f"variants.{name}")
            for name, v in variants.items()
        },
        shadow_stats=(
            None
            if body["shadow_stats"] is None
            else ShadowStats.from_wire(body["shadow_stats"], "shadow_stats")
        ),
        events={
            _known(name, ("accepted", "duplicate", "rejected"), "events"): _count(
                value, f"events.{name}"
            )
            for name, value in events.items()
        },
        spool_events=_count(spool[0], "spool.events"),
        spool_bytes=_count(spool[1], "spool.bytes"),
        publish_lag_s=_number(spool[2], "spool.lag_s"),
    )


# -- field checks ---------------------------------------------------------------------------


def _map(raw: Any, where: str, keys: set[str] | frozenset[str] | None) -> dict[Any, Any]:
    if not isinstance(raw, dict):
        raise TelemetryError(f"{where} must be a map", field=where)
    if keys is not None and set(raw) != set(keys):
        missing, extra = sorted(set(keys) - set(raw)), sorted(map(str, set(raw) - set(keys)))
        raise TelemetryError(
            f"{where} has missing keys {missing} / unknown keys {extra[:5]}", field=where
        )
    return raw


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
        raise TelemetryError(f"{where} must be a non-negative integer", field=where)
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TelemetryError(f"{where} must be a finite number", field=where)
    if value < 0:
        raise TelemetryError(f"{where} must not be negative", field=where)
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise TelemetryError(f"{where} must be true or false", field=where)
    return value


def _version(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TelemetryError(f"{where} must be a positive bundle version or null", field=where)
    return value


def _known(name: Any, allowed: tuple[str, ...], where: str) -> str:
    if name not in allowed:
        raise TelemetryError(f"{where} has an unknown name {name!r:.40}", field=where)
    return str(name)


def _refused(entry: Any, n: int) -> Refused:
    where = f"refused[{n}]"
    if not isinstance(entry, list) or len(entry) != 3:
        raise TelemetryError(f"{where} must be [version, code, message]", field="refused")
    version = _version(entry[0], where)
    if version is None or not all(isinstance(x, str) and len(x) <= 512 for x in entry[1:]):
        raise TelemetryError(f"{where} must be [version, code, message]", field="refused")
    return Refused(version, entry[1], entry[2])
