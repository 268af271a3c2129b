"""Runs the edge under uvicorn, tuned as measured: uvloop, httptools, no access log.

Connections are guarded below the app (:mod:`edge_node.middleware.connections`): a cap
per peer address and a deadline and size for request headers.

Shutdown is graceful: uvicorn stops accepting, waits up to ``shutdown_timeout_s`` for
requests in flight, then the lifespan flushes and fsyncs the spool.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from edge_node.app import Prepared, create_app
from edge_node.config import EdgeSettings
from edge_node.middleware.connections import ConnectionGuard, guarded_protocol

WS_MAX_FRAME = 64 * 1024
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this


def uvicorn_config(settings: EdgeSettings, prepared: Prepared | None = None) -> uvicorn.Config:
    app = create_app(settings, prepared)
    guard = ConnectionGuard(
        settings.connections_per_address, settings.header_timeout_s, app.state.edge.metrics
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(guard),
        timeout_keep_alive=KEEP_ALIVE_S,
        ws="websockets-sansio",
        ws_max_size=WS_MAX_FRAME,
        lifespan="on",
        access_log=settings.access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        server_header=False,
    )


def serve(settings: EdgeSettings, prepared: Prepared | None = None) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = uvicorn.Server(uvicorn_config(settings, prepared))

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    # handler it found installed: with the default one, a clean stop would end the process
    # as killed by SIGTERM. This handler lets it exit with status 0 instead (and stops a
    # server that gets SIGTERM before uvicorn installs its own handlers).
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
