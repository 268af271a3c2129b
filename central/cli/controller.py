"""``proxima central controller``: the latency monitor and the rollout controller."""

from __future__ import annotations

import asyncio
import logging

import click

from central.cli.errors import reported_errors
from central.cli.options import nats_option
from central.cli.serving import serve
from central.monitor.service import LatencyMonitor, MonitorSettings
from central.rollout.service import RolloutService
from runtime.nats import NatsSettings

log = logging.getLogger("proxima.central.controller")


@click.command("controller")
@nats_option("")
@click.option(
    "--tick",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="Seconds between two looks at the active rollouts.",
)
def controller(nats_url: str, tick: float) -> None:
    """Walk rollouts step by step from edge telemetry, rolling back what hurts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with reported_errors():
        asyncio.run(_serve(nats_url, tick))


async def _serve(nats_url: str, tick: float) -> None:
    monitor = LatencyMonitor(
        MonitorSettings(nats=NatsSettings.from_url(nats_url, name="proxima-monitor"))
    )
    controller = RolloutService(
        NatsSettings.from_url(nats_url, name="proxima-rollout"), monitor.store, tick_s=tick
    )
    await serve(
        [monitor, controller], on_started=lambda: log.info("latency monitor and controller up")
    )
