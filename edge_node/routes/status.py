"""Liveness, readiness, the loaded model, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from edge_node import params
from edge_node.catalog import catalog_summary
from edge_node.errors import NotReady
from edge_node.routes.common import edge_state, json_response
from edge_node.state import EdgeState
from protocol.rollout import to_dict

# Served outside the in-flight cap: probes and scrapes must answer while the edge is busy.
UNCAPPED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = edge_state(request)
    model = state.models.current
    if model is None:
        raise NotReady("no verified bundle is loaded yet", retry_after_s=1)
    if state.uplink.fault is not None:  # logged by the uplink, with the path and errno
        raise NotReady("the event spool cannot write to its disk", retry_after_s=5)
    catalog = state.catalog
    catalog_missing = catalog is not None and not catalog.bootstrapped.is_set()
    # A cold edge waits for the catalog while it can load it; one started with the bus down
    # serves its cached bundle as DESIGN asks (ready but stale) and says the catalog is not
    # loaded, rather than refusing every request until the bus is back.
    if catalog_missing and state.bus is not None and state.bus.connection is not None:
        raise NotReady("the item catalog is not loaded yet", retry_after_s=1)
    body: dict[str, Any] = {
        "ready": True,
        "version": model.version,
        "stale": state.models.stale or catalog_missing,
    }
    if catalog is not None:
        body["catalog"] = catalog_summary(catalog)
    return json_response(body)


async def model_info(request: Request) -> Response:
    state = edge_state(request)
    models = state.models
    model = models.current
    bundle: dict[str, Any] | None = None
    if model is not None and model.manifest is not None:
        manifest = model.manifest
        bundle = {
            "version": model.version,
            "precision": model.precision,
            "created_at": manifest.created_at,
            "feature_schema_version": manifest.feature_schema_version,
            "rules_version": manifest.rules_version,
            "items": model.tables.n_items,
            "loaded_at": models.loaded_at,
        }
    refusal = models.last_refusal
    body: dict[str, Any] = {
        "region": state.settings.region,
        "node": state.settings.node,
        "bundle": bundle,
        "stale": models.stale,
        "rules_version": state.recommender.rules.version if state.recommender.rules else None,
        "canary": None
        if models.canary is None
        else {
            "version": models.canary.model.version,
            "percent": models.canary.percent,
            "shadow": models.canary.shadow,
        },
        "rollout": _rollout(state),
        "last_refusal": None
        if refusal is None
        else {
            "source": refusal.source,
            "code": refusal.code,
            "message": refusal.message,
            "at": refusal.at,
        },
    }
    if "session_id" in request.query_params:
        session_id = params.session_id(request.query_params)
        chosen, variant = models.choose(session_id)
        body["session_id"] = session_id
        body["variant"] = variant
        body["variant_version"] = chosen.version if chosen is not None else None
    return json_response(body)


def _rollout(state: EdgeState) -> dict[str, Any] | None:
    if state.model_sync is None:
        return None
    status = state.model_sync.status
    return {
        "state": to_dict(status.rollout) if status.rollout else None,
        "connected": status.connected,
        "last_error": status.last_error,
    }


async def metrics(request: Request) -> Response:
    state = edge_state(request)
    m = state.metrics
    sessions = state.sessions
    m.sessions.set(len(sessions))
    m.session_bytes.set(sessions.bytes)
    m.session_evictions.set(sessions.evictions)
    m.sessions_unsynced.set(sessions.unsynced)
    m.redis_breaker_state.set(int(sessions.breaker.state))
    m.redis_feed_up.set(1 if sessions.feed_up else 0)
    spool = state.uplink.spool
    m.spool_pending_bytes.set(spool.pending_bytes)
    m.spool_pending_events.set(spool.pending_records)
    m.spool_io_errors.set(state.uplink.counters.io_errors)
    m.spool_fault.set(0 if state.uplink.fault is None else 1)
    m.streams.set(state.streams.open_streams)
    canary = state.models.canary
    m.canary_version.set(canary.model.version if canary else 0)
    m.canary_percent.set(canary.percent if canary and not canary.shadow else 0)
    if state.publisher is not None:
        published = state.publisher.status
        m.publish_lag.set(published.lag_s)
        m.published.set(published.published)
        m.bus_connected.set(1 if published.connected else 0)
        m.dead_lettered.set(published.dead_lettered)
        m.events_stream_missing.set(1 if published.stream_missing else 0)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
