"""Runs the edge under uvicorn, tuned as measured: uvloop, httptools, no access log.

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

WS_MAX_FRAME = 64 * 1024


def uvicorn_config(settings: EdgeSettings, prepared: Prepared | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, prepared),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
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
