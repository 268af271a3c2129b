"""Counts HTTP answers by route and status (routes are a fixed set: no label explosion)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_node.metrics import EdgeMetrics


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: EdgeMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
