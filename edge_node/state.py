"""Everything a running edge holds, created and released by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from edge_node.config import EdgeSettings
from edge_node.metrics import EdgeMetrics
from edge_node.model_store import ModelStore
from edge_node.model_sync import ModelSync
from edge_node.ratelimit import TokenBuckets
from edge_node.recommend import Recommender
from edge_node.sessions import SessionStore
from edge_node.streams import StreamHub
from edge_node.uplink import Uplink
from edge_node.uplink.publisher import EventPublisher


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
    model_sync: ModelSync | None = None
    publisher: EventPublisher | None = None
