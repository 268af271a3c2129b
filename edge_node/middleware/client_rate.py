"""Per-client-address token buckets for every HTTP request and WebSocket connection.

The address is the one uvicorn resolved: behind a CDN or load balancer, run uvicorn with
proxy headers trusted only from those hops, so ``X-Forwarded-For`` cannot be forged.

A request costs one token here, before its body is read; a route whose request carries many
units of work (``POST /v1/events``: one per event) charges the rest with
:func:`charge_client` once it knows how many, so a batch of 500 costs what 500 single
posts would.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from edge_node.errors import RateLimited
from edge_node.metrics import EdgeMetrics
from edge_node.middleware.respond import send_error
from edge_node.ratelimit import TokenBuckets

_SCOPE_KEY: Final = "proxima.client_rate"


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
        address = client[0] if client else "-"
        wait = self.buckets.take(address)
        if not wait:
            scope[_SCOPE_KEY] = (self.buckets, address, self._rejected)
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


def charge_client(scope: Scope, units: int) -> None:
    """Charges the client address of ``scope`` for ``units`` of work in all, of which the
    request itself paid one; raises :class:`RateLimited` (nothing done yet) when over.

    A charge is capped at the bucket's burst, so the largest allowed batch can always pass
    once the bucket is full. Without the middleware in front, nothing is charged.
    """
    charged = scope.get(_SCOPE_KEY)
    if charged is None or units <= 1:
        return
    buckets, address, rejected = charged
    wait = buckets.take(address, min(float(units - 1), buckets.burst))
    if wait:
        rejected.inc()
        raise RateLimited(
            f"too many events from this address; retry in {wait:.1f}s", retry_after_s=wait
        )
