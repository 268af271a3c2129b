"""Central's Prometheus endpoint: ``GET /metrics`` on a small Starlette app under uvicorn.

It runs in the event loop the monitor runs in, not in a thread of its own (as
``prometheus_client.start_http_server`` would): collecting reads the telemetry store, which
the loop mutates as reports arrive and which is deliberately lock-free. The socket is bound
before serving, so a port already taken fails :meth:`MetricsServer.start` with a clear
error instead of a log line from inside uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from central.monitor.errors import MonitorSettingsError

_START_TIMEOUT_S = 10.0


def metrics_app(registries: Sequence[CollectorRegistry]) -> Starlette:
    async def metrics(request: Request) -> Response:
        body = b"".join(generate_latest(registry) for registry in registries)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the process that embeds this server owns SIGINT and SIGTERM


class MetricsServer:
    """A :class:`runtime.service.Service`: :meth:`start` returns once it serves."""

    def __init__(
        self, registries: Sequence[CollectorRegistry], *, host: str = "127.0.0.1", port: int
    ) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            metrics_app(registries),
            loop="none",
            http="h11",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            sock = socket.create_server((self.host, self.port), reuse_port=False)
        except OSError as exc:
            raise MonitorSettingsError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}",
                field="metrics_port",
            ) from exc
        self.port = sock.getsockname()[1]
        task = self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="metrics-http"
        )
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        try:
            while not self._server.started:
                if task.done() or asyncio.get_running_loop().time() > deadline:
                    raise MonitorSettingsError(
                        f"the metrics server on {self.host}:{self.port} did not start",
                        field="metrics_port",
                    )
                await asyncio.sleep(0.01)
        except BaseException:
            await self.close()
            raise

    async def close(self, timeout_s: float = 5.0) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
