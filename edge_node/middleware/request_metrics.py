"""Records every HTTP answer by route and status (routes are a fixed set: no label explosion).

It records into the edge's :class:`~edge_node.observe.Observer`, once: every answer's
status, and the time from the request reaching the app to the last byte handed to the
server for ``GET /v1/recommendations`` (the ``request`` stage, the closest the edge gets to
what a client measures).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_node.observe import Observer

_TIMED_ROUTE = "/v1/recommendations"


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, *, observer: Observer, routes: frozenset[str]) -> None:
        self.app = app
        self.observer = observer
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = 500
        started = time.perf_counter()

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            observer = self.observer
            observer.http(route, status)
            if route == _TIMED_ROUTE and status == 200:
                observer.stage("request", time.perf_counter() - started)
