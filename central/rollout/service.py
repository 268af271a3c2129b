"""Running the controller against the bus: one connection, retried until it comes up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import nats
from nats.aio.client import Client as NatsClient

from central.monitor.store import TelemetryStore
from central.rollout.controller import RolloutController
from runtime.nats import NatsSettings

log = logging.getLogger("proxima.rollout")

_RETRY_INITIAL_S = 0.2
_RETRY_MAX_S = 5.0


async def run_controller(
    settings: NatsSettings, telemetry: TelemetryStore, stop: asyncio.Event, *, tick_s: float = 1.0
) -> None:
    """Walks rollouts until ``stop`` is set; the client reconnects by itself once connected."""
    client = await _connect(settings, stop)
    if client is None:
        return
    try:
        await RolloutController(client.jetstream(), telemetry, tick_s=tick_s).run(stop)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _connect(settings: NatsSettings, stop: asyncio.Event) -> NatsClient | None:
    delay = _RETRY_INITIAL_S
    options = settings.connect_options() | {
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
    }
    while not stop.is_set():
        try:
            return await nats.connect(**options)
        except Exception as exc:
            log.warning("rollout controller cannot reach NATS yet: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(delay / 2, delay))
        delay = min(delay * 2, _RETRY_MAX_S)
    return None
