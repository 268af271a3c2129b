"""Everything a running edge holds, created and released by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_node.catalog import CatalogReplica
from edge_node.config import EdgeSettings
from edge_node.metrics import EdgeMetrics
from edge_node.model_store import ModelStore
from edge_node.model_sync import ModelSync
from edge_node.ratelimit import TokenBuckets
from edge_node.recommend import Recommender
from edge_node.sessions import SessionStore
from edge_node.streams import StreamHub
from edge_node.telemetry import TelemetryPublisher
from edge_node.uplink import Uplink
from edge_node.uplink.publisher import EventPublisher
from edge_node.users import UserHistory
from runtime.supervisor import BusSupervisor


@dataclass(eq=False)
class EdgeState:
    settings: EdgeSettings
    metrics: EdgeMetrics
    models: ModelStore
    sessions: SessionStore
    uplink: Uplink
    recommender: Recommender
    session_buckets: TokenBuckets
    streams: StreamHub
    bus: BusSupervisor | None = None  # the one NATS connection, with --nats
    model_sync: ModelSync | None = None
    publisher: EventPublisher | None = None
    telemetry_publisher: TelemetryPublisher | None = None
    catalog: CatalogReplica | None = None  # the item catalog's replica, with --nats
    users: UserHistory | None = None  # returning users' recent items, and erasure


def node_status(state: EdgeState) -> dict[str, Any]:
    """What this node serves and holds now, for telemetry and metrics."""
    models = state.models
    canary = models.canary
    spool = state.uplink.spool
    publisher = state.publisher
    return {
        "ready": models.current is not None,
        "stale": models.stale,
        "stable": models.current.version if models.current else None,
        "canary": canary.model.version if canary else None,
        "canary_percent": canary.percent if canary and not canary.shadow else 0,
        "shadow": bool(canary and canary.shadow),
        "refused": dict(models.refused_versions),
        "spool_events": spool.pending_records,
        "spool_bytes": spool.pending_bytes,
        "publish_lag_s": publisher.status.lag_s if publisher is not None else 0.0,
    }
