"""``proxima central run``: the bridge, the lake writer, the continuous trainer, the latency
monitor and the rollout controller in one process.

Each role keeps its own NATS connection, named after it (``proxima-monitor``,
``proxima-bridge``, ``proxima-trainer``, ``proxima-rollout``). They start in this order:
the monitor, the metrics server, the bridge (it creates the stream and the topic the
trainer reads), the lake writer (``--lake DIR``, off with ``--no-lake``), the trainer, the
controller; and close in reverse order within one
shutdown timeout (:mod:`central.cli.serving`). Each bundle the trainer publishes is
promoted in ``--regions``, or rolled out there by the ``--canary-*`` policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import click

from central.bridge import Bridge
from central.cli.errors import CommandError, reported_errors
from central.cli.options import (
    canary_options,
    kafka_option,
    kafka_security,
    nats_connection,
    nats_option,
    rollout_policy,
    signing_key_option,
)
from central.cli.serving import Served, serve
from central.kafka_settings import KafkaSettings
from central.lake.erasure import LakeEraser
from central.lake.writer import LakeWriter
from central.metrics import central_registry
from central.monitor import LatencyMonitor, MonitorSettings
from central.monitor.http import MetricsServer
from central.outcomes.offpolicy import GateSettings
from central.outcomes.service import OutcomesCollector, OutcomesService, OutcomesSettings
from central.rollout.operations import bundle_release
from central.rollout.service import RolloutService
from central.settings import LakeWriterSettings
from central.trainer.pipeline import TrainerConfig
from central.trainer.retrain import OffPolicyCheck
from central.trainer.service import TrainerService, TrainerServiceConfig
from protocol.keys import load_private_key
from protocol.subjects import KAFKA_EVENTS_TOPIC, check_token

log = logging.getLogger("central.run")

TRAINER_SHUTDOWN_SHARE = 0.5


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
@click.option(
    "--lake",
    "lake_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./proxima-lake"),
    show_default=True,
    help="Write every event into the Parquet event lake at this directory.",
)
@click.option("--no-lake", is_flag=True, help="Run without the lake writer.")
@click.option(
    "--offpolicy-gate",
    is_flag=True,
    help="Publish a retrained bundle only if, on the answers logged in the lake, it is "
    "estimated off-policy (doubly robust) to be no worse than the stable bundle.",
)
@click.option(
    "--offpolicy-margin",
    type=click.FloatRange(0, 1e6),
    default=0.0,
    show_default=True,
    help="With --offpolicy-gate: reward per answer a candidate may lose.",
)
@click.option("--partitions", type=click.IntRange(1, 10_000), default=6, show_default=True)
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
    "--catalog-port",
    type=click.IntRange(0, 65535),
    help="Serve the catalog API (PUT/PATCH/DELETE /v1/catalog/items, the signed webhook) on "
    "this port; its token comes from PROXIMA_CATALOG_TOKEN or PROXIMA_CATALOG_TOKEN_FILE.",
)
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
    lake_dir: Path,
    no_lake: bool,
    offpolicy_gate: bool,
    offpolicy_margin: float,
    partitions: int,
    retrain_events: int,
    retrain_interval: float,
    min_events: int,
    metrics_port: int | None,
    metrics_host: str,
    catalog_port: int | None,
    rollout_tick: float,
    **canary: Any,
) -> None:
    """Run the NATS→Kafka bridge, the continuous trainer, the latency monitor and the rollout
    controller together until stopped."""
    if signing_key is None:
        raise CommandError("no signing key: pass --signing-key PATH or set PROXIMA_SIGNING_KEY")
    if offpolicy_gate and no_lake:
        raise click.UsageError("--offpolicy-gate reads the lake: it does not go with --no-lake")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with reported_errors():
        key_pem = signing_key.read_bytes()
        record_signer = load_private_key(key_pem)  # signs the rollout records it writes too

        def kafka(client_id: str) -> KafkaSettings:
            return KafkaSettings.from_bootstrap(
                kafka_bootstrap,
                topic=KAFKA_EVENTS_TOPIC,
                dlq_topic=f"{KAFKA_EVENTS_TOPIC}.dlq",
                client_id=client_id,
                security=kafka_security(),
            )

        targets = tuple(check_token(r.strip(), "region") for r in regions.split(",") if r.strip())
        monitor = LatencyMonitor(
            MonitorSettings(nats=nats_connection(nats_url, name="proxima-monitor"))
        )
        services: list[Served] = [monitor]
        outcomes = None if no_lake else OutcomesService(OutcomesSettings(lake_dir))
        if metrics_port is not None:
            roles = central_registry(
                bridge=lambda: bridge.status,
                trainer=lambda: trainer.status,
                lake=None if no_lake else lambda: lake_writer.status,
            )
            if outcomes is not None:
                roles.register(OutcomesCollector(outcomes))
            metrics = MetricsServer(
                [monitor.registry, roles], host=metrics_host, port=metrics_port
            )
            services.append(metrics)
        bridge = Bridge(
            nats_connection(nats_url, name="proxima-bridge"),
            kafka("proxima-bridge"),
            partitions=partitions,
            idempotent=not no_idempotence,
        )
        trainer = TrainerService(
            TrainerServiceConfig(
                nats=nats_connection(nats_url, name="proxima-trainer"),
                kafka=kafka("proxima-trainer"),
                state_dir=state_dir,
                private_key_pem=key_pem,
                regions=targets,
                on_published=bundle_release(targets, rollout_policy(canary), record_signer),
                retrain_events=retrain_events,
                retrain_interval_s=retrain_interval,
                min_events=min_events,
                trainer=TrainerConfig(),
                offpolicy=(
                    OffPolicyCheck(lake_dir, GateSettings(margin=offpolicy_margin))
                    if offpolicy_gate
                    else None
                ),
            )
        )
        controller = RolloutService(
            nats_connection(nats_url, name="proxima-rollout"),
            monitor.store,
            tick_s=rollout_tick,
            signer=record_signer,
        )
        if catalog_port is not None:
            from central.catalog.kafka import CatalogFeed
            from central.catalog.service import CatalogService
            from central.catalog.settings import CatalogSettings

            catalog_settings = CatalogSettings.load(
                env=os.environ, overrides={"nats_url": nats_url, "catalog_port": catalog_port}
            )
            services.append(CatalogService(catalog_settings))
            # the catalog for the trainer: the KV's changes into a compacted topic
            feed_nats = nats_connection(nats_url, name="proxima-catalog-feed")
            feed_kafka = kafka("proxima-catalog-feed")
            services.append(CatalogFeed(feed_nats, feed_kafka, idempotent=not no_idempotence))
        services.append(bridge)
        watched = [bridge.wait_stopped, trainer.wait_stopped]
        if not no_lake:
            lake_writer = LakeWriter(
                LakeWriterSettings(
                    kafka_bootstrap=kafka_bootstrap, topic=KAFKA_EVENTS_TOPIC, lake_dir=lake_dir
                ),
                kafka=kafka("proxima-lake"),
            )
            services.append(lake_writer)
            watched.append(lake_writer.wait_stopped)
        if outcomes is not None:  # attribution of the lake, for /metrics and the dashboard
            services.append(outcomes)
            # Users erased at the edges leave the lake, so the next training never sees them.
            services.append(LakeEraser(nats_connection(nats_url, name="proxima-eraser"), lake_dir))
        # A training under way may take half of the shutdown time; the bridge then drains.
        services += [(trainer, TRAINER_SHUTDOWN_SHARE), controller]

        def started() -> None:
            if metrics_port is not None:
                log.info("metrics on http://%s:%d/metrics", metrics.host, metrics.port)
            log.info("bridge, trainer, latency monitor and rollout controller running")

        asyncio.run(
            serve(services, watch=watched, on_started=started)
        )
