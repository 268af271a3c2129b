"""``proxima central controller``: the latency monitor and the rollout controller."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.cli.errors import reported_errors
from central.cli.options import nats_connection, nats_option
from central.cli.serving import serve
from central.monitor.service import LatencyMonitor, MonitorSettings
from central.rollout.service import RolloutService
from protocol.keys import load_private_key

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
@click.option(
    "--rollout-signing-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="PROXIMA_ROLLOUT_SIGNING_KEY",
    show_envvar=True,
    help="Private key that signs the rollout records the controller writes.",
)
def controller(nats_url: str, tick: float, rollout_signing_key: Path | None) -> None:
    """Walk rollouts step by step from edge telemetry, rolling back what hurts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with reported_errors():
        signer = (
            load_private_key(rollout_signing_key.read_bytes())
            if rollout_signing_key is not None
            else None
        )
        asyncio.run(_serve(nats_url, tick, signer))


async def _serve(nats_url: str, tick: float, signer: Ed25519PrivateKey | None) -> None:
    monitor = LatencyMonitor(
        MonitorSettings(nats=nats_connection(nats_url, name="proxima-monitor"))
    )
    controller = RolloutService(
        nats_connection(nats_url, name="proxima-rollout"),
        monitor.store,
        tick_s=tick,
        signer=signer,
    )
    await serve(
        [monitor, controller], on_started=lambda: log.info("latency monitor and controller up")
    )
