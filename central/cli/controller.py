"""``proxima central controller``: the latency monitor and the rollout controller."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from central.cli.errors import reported_errors
from central.cli.options import nats_option
from central.monitor.service import LatencyMonitor, MonitorSettings
from central.rollout.service import run_controller
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    monitor = LatencyMonitor(
        MonitorSettings(nats=NatsSettings.from_url(nats_url, name="proxima-monitor"))
    )
    await monitor.start()
    try:
        await run_controller(
            NatsSettings.from_url(nats_url, name="proxima-rollout"),
            monitor.store,
            stop,
            tick_s=tick,
        )
    finally:
        await monitor.close()
