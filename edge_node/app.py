"""The edge's Starlette application.

:func:`prepare` does the start-up checks that can fail on operator input (public key,
bundle, rules) so the command line reports them before any port is opened;
:func:`create_app` wires routes and middlewares, and its lifespan opens and releases the
resources that live with the server (Redis client, spool, background tasks).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from edge_node.breaker import CircuitBreaker
from edge_node.config import EdgeSettings
from edge_node.errors import EdgeError, SettingsError
from edge_node.feedback import FeedbackIds, load_feedback_ids
from edge_node.keyring import bundle_keys, rollout_keys
from edge_node.middleware.client_rate import ClientRateLimitMiddleware
from edge_node.middleware.concurrency import ConcurrencyLimitMiddleware
from edge_node.middleware.request_metrics import RequestMetricsMiddleware
from edge_node.middleware.site_keys import ingest_keys
from edge_node.model_store import ModelStore
from edge_node.observe import Observer
from edge_node.ratelimit import TokenBuckets
from edge_node.recommend import Recommender
from edge_node.routes import assets, events, openapi, recommendations, similar, status, stream
from edge_node.routes.common import json_response
from edge_node.routes.users import delete_user
from edge_node.rules import RulesError, RuleSet
from edge_node.services import edge_services
from edge_node.sessions import SessionStore, redis_timeouts
from edge_node.state import EdgeState
from edge_node.streams import StreamHub
from edge_node.uplink import Uplink
from protocol.errors import ProtocolError, ProximaError
from protocol.serving import ServingModel
from protocol.window import WindowConfig
from runtime.service import ServiceStack

log = logging.getLogger("proxima.edge")

ROUTES = (
    Route("/v1/events", events.post_events, methods=["POST"]),
    Route("/v1/recommendations", recommendations.get_recommendations, methods=["GET"]),
    Route("/v1/items/{item_id}/similar", similar.get_similar, methods=["GET"]),
    Route("/v1/users/{user_id}", delete_user, methods=["DELETE"]),
    WebSocketRoute("/v1/stream", stream.stream),
    Route("/v1/model", status.model_info, methods=["GET"]),
    Route("/healthz", status.healthz, methods=["GET"]),
    Route("/readyz", status.readyz, methods=["GET"]),
    Route("/metrics", status.metrics, methods=["GET"]),
    Route("/openapi.json", openapi.openapi, methods=["GET"]),
    Route(assets.SNIPPET_PATH, assets.snippet, methods=["GET"]),
    Route("/demo/", assets.demo_file, methods=["GET"]),
    Route("/demo/storefront.css", assets.demo_file, methods=["GET"]),
    Route("/demo/storefront.js", assets.demo_file, methods=["GET"]),
    Route("/demo/items.json", assets.demo_items, methods=["GET"]),
)


@dataclass(frozen=True, slots=True)
class Prepared:
    models: ModelStore
    rules: RuleSet | None
    storefront: assets.Storefront | None = None  # the demo storefront, when storefront_dir is set
    feedback: FeedbackIds | None = None  # signs request ids; made for the process when None


def prepare(settings: EdgeSettings) -> Prepared:
    """Loads the key, the bundle, the rules and the storefront's files; raises
    :class:`SettingsError` on any problem."""
    key = bundle_keys(settings)  # public_key and trusted_public_keys, less the revoked
    rollout_keys(settings)  # read again by the model sync; checked here, before any port opens
    models = ModelStore(key, rank_cache_sessions=settings.rank_cache_sessions)
    if settings.bundle is None and settings.nats_url is None:
        raise SettingsError("nothing to serve: pass --bundle PATH, or --nats URL to follow the bus")
    if settings.bundle is not None:
        try:
            models.load_file(settings.bundle)
        except OSError as exc:
            raise SettingsError(f"cannot read bundle {settings.bundle}: {exc.strerror}") from exc
        except ProtocolError as exc:
            raise SettingsError(
                f"bundle {settings.bundle} refused: {exc.message} [{exc.code}]"
            ) from exc
    rules = None
    if settings.rules is not None:
        try:
            rules = RuleSet.parse(settings.rules.read_bytes())
        except OSError as exc:
            raise SettingsError(f"cannot read rules {settings.rules}: {exc.strerror}") from exc
        except RulesError as exc:
            raise SettingsError(f"rules {settings.rules}: {exc}") from exc
    storefront = None
    if settings.storefront_dir is not None:
        storefront = assets.Storefront.load(settings.storefront_dir)
    ingest_keys(settings.api_keys, settings.site_keys)  # malformed site keys fail here
    feedback = load_feedback_ids(settings.feedback_secret, settings.feedback_secret_file)
    return Prepared(models, rules, storefront, feedback)


def create_app(settings: EdgeSettings, prepared: Prepared | None = None) -> Starlette:
    prepared = prepared or prepare(settings)
    observer = Observer(settings.region, settings.node)  # what /metrics and telemetry read
    metrics = observer.metrics
    models = prepared.models
    window_config = models.current.window_config if models.current else WindowConfig()
    redis = None
    if settings.redis:
        redis = aioredis.from_url(
            settings.redis, **settings.redis_options(), **redis_timeouts(settings.redis_timeout_s)
        )
    sessions = SessionStore(
        window_config,
        max_sessions=settings.sessions_max,
        max_bytes=settings.sessions_max_bytes,
        node_id=f"{settings.region}/{settings.node}",
        redis=redis,
        breaker=CircuitBreaker(settings.redis_breaker_failures, settings.redis_breaker_cooldown_s),
        feed_ping_s=settings.redis_feed_ping_s,
        metrics=metrics,
    )
    state = EdgeState(
        settings=settings,
        metrics=metrics,
        models=models,
        sessions=sessions,
        uplink=Uplink.from_settings(settings),
        recommender=Recommender(
            models,
            sessions,
            observer,
            settings.node,
            prepared.rules,
            shadow_sample=settings.shadow_sample,
            feedback=prepared.feedback,
        ),
        session_buckets=TokenBuckets(
            settings.session_rate, settings.session_burst, settings.rate_limit_keys
        ),
        streams=StreamHub(
            settings.stream_max_per_session,
            metrics,
            max_total=settings.stream_max,
            max_per_address=settings.stream_max_per_address,
        ),
    )
    if models.current is not None:
        metrics.bundle_version.set(models.current.version)

    def swapped(model: ServingModel) -> None:
        metrics.bundle_version.set(model.version)
        sessions.reconfigure(model.window_config)

    services = edge_services(settings, state, on_swap=swapped)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Closed in reverse: the publisher drains what it can before the spool closes; what
        # it cannot stays in the spool for the next start.
        async with ServiceStack(settings.shutdown_timeout_s) as stack:
            if redis is not None:
                stack.push_close(redis.aclose)
            for entry in services:
                await stack.start(entry.service, share=entry.share)
            yield

    middleware = [
        Middleware(
            RequestMetricsMiddleware,
            observer=observer,
            routes=frozenset(r.path for r in ROUTES),
        ),
        Middleware(
            ClientRateLimitMiddleware,
            metrics=metrics,
            buckets=TokenBuckets(settings.ip_rate, settings.ip_burst, settings.rate_limit_keys),
        ),
        Middleware(
            ConcurrencyLimitMiddleware,
            limit=settings.max_concurrency,
            metrics=metrics,
            exempt=status.UNCAPPED_PATHS,
        ),
    ]
    # A preflight is answered only for these: the pages of cors_origins and of site keys.
    origins = (
        set(settings.cors_origins) | ingest_keys(settings.api_keys, settings.site_keys).origins
    )
    if origins:
        middleware.insert(
            0,
            Middleware(
                JsonErrorCORSMiddleware,
                allow_origins=sorted(origins),
                allow_methods=["GET", "POST"],
                allow_headers=["content-type", "x-proxima-key"],
                max_age=600,
            ),
        )
    app = Starlette(
        routes=list(ROUTES),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ProximaError: _proxima_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.edge = state
    app.state.storefront = prepared.storefront
    return app


class JsonErrorCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered as a JSON error body."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        message = bytes(response.body).decode()  # "Disallowed CORS origin, method"
        return json_response(
            {"error": {"code": "cors_refused", "message": message}},
            status=response.status_code,
            headers=headers,
        )


async def _proxima_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProximaError)
    if exc.status >= 500 and not isinstance(exc, EdgeError):  # not answered on purpose
        log.error("%s on %s %s", exc.code, request.method, request.url.path, exc_info=exc)
    return Response(
        exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers()
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response(
        {"error": {"code": code, "message": str(exc.detail)}},
        status=exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return json_response(
        {"error": {"code": "internal_error", "message": "internal error"}}, status=500
    )
