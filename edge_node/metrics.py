"""The edge's Prometheus metrics, on a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGES = ("window", "candidates", "features", "inference", "rules", "total")
# 25 µs to 2.5 s: the interesting range of an edge answer is well under a millisecond.
LATENCY_BUCKETS = (
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class EdgeMetrics:
    def __init__(self, region: str, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_seconds = Histogram(
            "proxima_edge_stage_seconds",
            "Time per stage of a recommendation answer",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = {stage: self.stage_seconds.labels(stage) for stage in STAGES}
        self.requests = Counter(
            "proxima_edge_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.events = Counter(
            "proxima_edge_events_total",
            "Events by outcome",
            ["outcome"],
            registry=r,
        )
        self.events_accepted = self.events.labels("accepted")
        self.events_duplicate = self.events.labels("duplicate")
        self.events_rejected = self.events.labels("rejected")
        self.rejected = Counter(
            "proxima_edge_rejections_total",
            "Requests refused before work: rate limits, overload",
            ["reason"],
            registry=r,
        )
        self.recommendations = Counter(
            "proxima_edge_recommendations_total",
            "Answers by kind",
            ["kind"],
            registry=r,
        )
        self.variant_answers = Counter(
            "proxima_edge_variant_answers_total",
            "Recommendation answers by the variant that gave them",
            ["variant"],
            registry=r,
        )
        self.variant_errors = Counter(
            "proxima_edge_variant_errors_total",
            "Rankings that failed, by variant (a failed canary falls back to stable)",
            ["variant"],
            registry=r,
        )
        self.feedback = Counter(
            "proxima_edge_feedback_total",
            "Impression and click events tied to a recommendation, by the variant that gave it",
            ["variant", "type"],
            registry=r,
        )
        self.feedback_rejected = Counter(
            "proxima_edge_feedback_rejected_total",
            "Impressions and clicks kept as events but not counted: their request id did not "
            "verify for their session",
            ["type", "reason"],
            registry=r,
        )
        self.shadow_overlap = Histogram(
            "proxima_edge_shadow_overlap",
            "Share of the served top-k that a shadow canary also ranks in its top-k",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.canary_version = Gauge(
            "proxima_edge_canary_version",
            "Version of the canary bundle held (0: none)",
            registry=r,
        )
        self.canary_percent = Gauge(
            "proxima_edge_canary_percent",
            "Share of sessions the canary answers (0 in shadow mode)",
            registry=r,
        )
        self.rules_fired = Counter(
            "proxima_edge_rules_fired_total",
            "Rules whose condition held",
            ["rule"],
            registry=r,
        )
        self.bundle_version = Gauge(
            "proxima_edge_bundle_version",
            "Version of the bundle being served",
            registry=r,
        )
        self.bundle_refusals = Counter(
            "proxima_edge_bundle_refusals_total",
            "Bundles refused by a check",
            ["code"],
            registry=r,
        )
        self.sessions = Gauge("proxima_edge_sessions", "Session windows held in memory", registry=r)
        self.spool_pending_bytes = Gauge(
            "proxima_edge_spool_pending_bytes",
            "Accepted event bytes not yet published",
            registry=r,
        )
        self.spool_io_errors = Gauge(
            "proxima_edge_spool_io_errors",
            "Spool writes and fsyncs that failed since the edge started",
            registry=r,
        )
        self.spool_fault = Gauge(
            "proxima_edge_spool_fault",
            "1 while the spool refuses events after a failed write or fsync",
            registry=r,
        )
        self.dead_lettered = Gauge(
            "proxima_edge_dead_lettered",
            "Events JetStream refused for good, moved to the dead-letter file",
            registry=r,
        )
        self.events_stream_missing = Gauge(
            "proxima_edge_events_stream_missing",
            "1 while JetStream has no EVENTS stream (central creates it)",
            registry=r,
        )
        self.spool_pending_events = Gauge(
            "proxima_edge_spool_pending_events",
            "Accepted events not yet published",
            registry=r,
        )
        self.publish_lag = Gauge(
            "proxima_edge_publish_lag_seconds",
            "Age of the oldest event not yet in JetStream",
            registry=r,
        )
        self.published = Gauge(
            "proxima_edge_published_events",
            "Events JetStream acknowledged since start",
            registry=r,
        )
        self.bus_connected = Gauge(
            "proxima_edge_bus_connected",
            "1 while the event publisher is connected to NATS",
            registry=r,
        )
        self.in_flight = Gauge(
            "proxima_edge_in_flight_requests", "Requests being served", registry=r
        )
        self.streams = Gauge("proxima_edge_streams", "Open WebSocket streams", registry=r)
        self.stream_dropped = Counter(
            "proxima_edge_stream_dropped_total",
            "Pushes dropped for slow WebSocket clients",
            registry=r,
        )
        self.session_bytes = Gauge(
            "proxima_edge_session_bytes",
            "Bytes the session windows held in memory take (counted, not estimated)",
            registry=r,
        )
        self.session_evictions = Gauge(
            "proxima_edge_session_evictions",
            "Session windows evicted to stay within the count and byte limits, since start",
            registry=r,
        )
        self.sessions_unsynced = Gauge(
            "proxima_edge_sessions_unsynced",
            "Session windows changed while Redis could not be written, waiting for it",
            registry=r,
        )
        self.redis_errors = Counter(
            "proxima_edge_redis_errors_total",
            "Redis calls that failed or timed out, by operation (read, write, feed)",
            ["op"],
            registry=r,
        )
        self.redis_skipped = Counter(
            "proxima_edge_redis_skipped_total",
            "Redis calls not made because the breaker was open, by operation",
            ["op"],
            registry=r,
        )
        self.redis_breaker_state = Gauge(
            "proxima_edge_redis_breaker_state",
            "Redis circuit breaker: 0 closed, 1 half-open, 2 open",
            registry=r,
        )
        self.redis_feed_up = Gauge(
            "proxima_edge_redis_feed_up",
            "1 while the session invalidation feed is subscribed and answering pings",
            registry=r,
        )
        self.connections = Gauge(
            "proxima_edge_connections",
            "Open HTTP connections (a WebSocket upgrade leaves this count for the streams')",
            registry=r,
        )
        info = Gauge("proxima_edge_info", "Where this edge runs", ["region", "node"], registry=r)
        info.labels(region, node).set(1)
