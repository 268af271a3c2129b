"""Caps requests in flight; beyond the cap answers 503 with Retry-After at once.

Liveness, readiness and metrics (``exempt`` paths) are served outside the cap: they do no
work worth shedding, and a flood of slow requests must not make the kubelet restart a pod
that is only busy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from edge_node.errors import Overloaded
from edge_node.metrics import EdgeMetrics
from edge_node.middleware.respond import send_error


class ConcurrencyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        metrics: EdgeMetrics,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.exempt = exempt
        self.in_flight = 0
        self._rejected = metrics.rejected.labels("concurrency")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self._rejected.inc()
            await send_error(send, Overloaded("too many requests in flight", retry_after_s=1))
            return
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
