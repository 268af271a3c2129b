"""``proxima central run``: the bridge, the continuous trainer, the latency monitor and the
rollout controller in one
process."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import click

from central.bridge import Bridge
from central.cli.errors import CommandError, reported_errors
from central.cli.options import (
    canary_options,
    kafka_option,
    nats_option,
    rollout_policy,
    signing_key_option,
)
from central.kafka_settings import KafkaSettings
from central.monitor import LatencyMonitor, MonitorSettings
from central.monitor.http import MetricsServer
from central.rollout.service import run_controller
from central.trainer.pipeline import TrainerConfig
from central.trainer.service import TrainerService, TrainerServiceConfig
from runtime.nats import NatsSettings
from protocol.keys import load_private_key
from protocol.subjects import KAFKA_EVENTS_TOPIC, check_token

log = logging.getLogger("central.run")


@click.command("run")
@nats_option("")
@kafka_option
@signing_key_option
@click.option("--regions", default="", help="Regions to promote passing bundles to, e.g. eu,us.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./proxima-trainer"),
    show_default=True,
)
@click.option("--no-idempotence", is_flag=True, help="For Kafka-protocol brokers without it.")
@click.option("--partitions", type=click.IntRange(1, 1024), default=6, show_default=True)
@click.option("--retrain-events", type=click.IntRange(1), default=50_000, show_default=True)
@click.option("--retrain-interval", type=click.FloatRange(1), default=3600.0, show_default=True)
@click.option("--min-events", type=click.IntRange(1), default=10_000, show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve central's Prometheus metrics (the latency monitor's) on this port.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--rollout-tick",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="Seconds between two looks of the rollout controller at the active rollouts.",
)
@canary_options
def run(
    nats_url: str,
    kafka_bootstrap: str,
    signing_key: Path | None,
    regions: str,
    state_dir: Path,
    no_idempotence: bool,
    partitions: int,
    retrain_events: int,
    retrain_interval: float,
    min_events: int,
    metrics_port: int | None,
    metrics_host: str,
    rollout_tick: float,
    **canary: Any,
) -> None:
    """Run the NATS→Kafka bridge, the continuous trainer, the latency monitor and the rollout
    controller together until stopped."""
    if signing_key is None:
        raise CommandError("no signing key: pass --signing-key PATH or set PROXIMA_SIGNING_KEY")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with reported_errors():
        key_pem = signing_key.read_bytes()
        load_private_key(key_pem)

        def kafka(client_id: str) -> KafkaSettings:
            return KafkaSettings.from_bootstrap(
                kafka_bootstrap,
                topic=KAFKA_EVENTS_TOPIC,
                dlq_topic=f"{KAFKA_EVENTS_TOPIC}.dlq",
                client_id=client_id,
            )

        bridge = Bridge(
            NatsSettings.from_url(nats_url, name="proxima-bridge"),
            kafka("proxima-bridge"),
            partitions=partitions,
            idempotent=not no_idempotence,
        )
        trainer = TrainerService(
            TrainerServiceConfig(
                nats=NatsSettings.from_url(nats_url, name="proxima-trainer"),
                kafka=kafka("proxima-trainer"),
                state_dir=state_dir,
                private_key_pem=key_pem,
                regions=tuple(
                    check_token(r.strip(), "region") for r in regions.split(",") if r.strip()
                ),
                retrain_events=retrain_events,
                retrain_interval_s=retrain_interval,
                min_events=min_events,
                trainer=TrainerConfig(),
                rollout=rollout_policy(canary),
            )
        )
        monitor = LatencyMonitor(
            MonitorSettings(nats=NatsSettings.from_url(nats_url, name="proxima-monitor"))
        )
        metrics = None
        if metrics_port is not None:
            metrics = MetricsServer([monitor.registry], host=metrics_host, port=metrics_port)
        controller_nats = NatsSettings.from_url(nats_url, name="proxima-rollout")
        asyncio.run(_serve(bridge, trainer, monitor, metrics, controller_nats, rollout_tick))


async def _serve(
    bridge: Bridge,
    trainer: TrainerService,
    monitor: LatencyMonitor,
    metrics: MetricsServer | None,
    controller_nats: NatsSettings,
    rollout_tick: float,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        stop.set()
        bridge.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop)
    await monitor.start()
    try:
        if metrics is not None:
            await metrics.start()
            log.info("metrics on http://%s:%d/metrics", metrics.host, metrics.port)
        await bridge.start()  # the bridge creates the stream and topic the trainer reads
        log.info("bridge, trainer, latency monitor and rollout controller running")
        try:
            await asyncio.gather(
                bridge.run_until_stopped(),
                trainer.run(stop),
                run_controller(controller_nats, monitor.store, stop, tick_s=rollout_tick),
            )
        finally:
            request_stop()
            await bridge.close()
    finally:
        if metrics is not None:
            await metrics.close()
        await monitor.close()
