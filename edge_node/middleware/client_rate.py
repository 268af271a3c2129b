"""Per-client-address token buckets for every HTTP request and WebSocket connection.

The address is the one uvicorn resolved: behind a CDN or load balancer, run uvicorn with
proxy headers trusted only from those hops, so ``X-Forwarded-For`` cannot be forged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from edge_node.errors import RateLimited
from edge_node.metrics import EdgeMetrics
from edge_node.middleware.respond import send_error
from edge_node.ratelimit import TokenBuckets


class ClientRateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, buckets: TokenBuckets, metrics: EdgeMetrics) -> None:
        self.app = app
        self.buckets = buckets
        self._rejected = metrics.rejected.labels("client_rate")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.buckets.take(client[0] if client else "-")
        if not wait:
            await self.app(scope, receive, send)
            return
        self._rejected.inc()
        if scope["type"] == "websocket":
            # A close before the accept is turned into an HTTP 403 by the server, and the
            # client never sees the code: accept, then close with 1013 (try again later).
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
            return
        await send_error(
            send, RateLimited("too many requests from this address", retry_after_s=wait)
        )
