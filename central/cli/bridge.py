"""``proxima central bridge``: forward the EVENTS stream into Kafka until stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import click

from central.bridge import Bridge
from central.cli.errors import reported_errors
from central.cli.options import kafka_option, kafka_security, nats_connection, nats_option
from central.cli.serving import serve
from central.kafka_settings import KafkaSettings
from protocol.subjects import KAFKA_EVENTS_TOPIC

log = logging.getLogger("proxima.central.bridge")


@click.command("bridge")
@nats_option("")
@kafka_option
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=6,
    show_default=True,
    help="Partitions of the events topic when the bridge creates it.",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Replicas of the topics when the bridge creates them (fewer, with a warning, "
    "when the cluster has fewer brokers).",
)
@click.option(
    "--min-insync-replicas",
    type=click.IntRange(1, 100),
    default=2,
    show_default=True,
    help="min.insync.replicas of the topics the bridge creates: copies acks=all waits for "
    "(at most the replicas).",
)
@click.option(
    "--no-idempotence",
    is_flag=True,
    help="Use a plain producer, for brokers that refuse idempotent ones (such as Tansu).",
)
@click.option(
    "--durable",
    default="proxima-bridge",
    show_default=True,
    help="Name of the durable JetStream consumer; bridges sharing it share the work.",
)
@click.option(
    "--batch", type=click.IntRange(1, 10_000), default=500, show_default=True,
    help="Messages pulled and produced per round.",
)  # fmt: skip
@click.option(
    "--topic",
    default=KAFKA_EVENTS_TOPIC,
    show_default=True,
    help="Kafka topic for events; invalid messages go to TOPIC.dlq.",
)
@click.option(
    "--ack-wait",
    type=click.FloatRange(1.0, 3600.0),
    default=60.0,
    show_default=True,
    help="Seconds before JetStream redelivers a message the bridge did not acknowledge.",
)
@click.option(
    "--status-every",
    type=click.FloatRange(0.0),
    default=30.0,
    show_default=True,
    help="Log counters and lag every this many seconds (0: never).",
)
def bridge(
    nats_url: str,
    kafka_bootstrap: str,
    partitions: int,
    replication_factor: int,
    min_insync_replicas: int,
    no_idempotence: bool,
    durable: str,
    batch: int,
    topic: str,
    ack_wait: float,
    status_every: float,
) -> None:
    """Forward every event in the EVENTS stream to Kafka, at least once, until stopped.

    A message is acknowledged in JetStream only after Kafka has it; SIGTERM or Ctrl-C lets
    the batch in hand settle first. Consumers of the topic dedupe by the event_id header.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with reported_errors():
        nats_settings = nats_connection(nats_url, name="proxima-bridge")
        kafka_settings = KafkaSettings.from_bootstrap(
            kafka_bootstrap,
            topic=topic,
            dlq_topic=f"{topic}.dlq",
            replication_factor=replication_factor,
            min_insync_replicas=min(min_insync_replicas, replication_factor),
            security=kafka_security(),
        )
        runner = Bridge(
            nats_settings, kafka_settings, durable=durable, batch=batch,
            partitions=partitions, idempotent=not no_idempotence, ack_wait_s=ack_wait,
        )  # fmt: skip
        _run(_serve(runner, status_every))


async def _serve(runner: Bridge, status_every: float) -> None:
    reporter = asyncio.create_task(_report_status(runner, status_every))
    try:
        await serve(
            [runner], watch=[runner.wait_stopped], on_started=lambda: log.info("bridge running")
        )
    finally:
        reporter.cancel()
        status = runner.status
        log.info(
            "bridge stopped: forwarded %d, dead-lettered %d, acknowledged %d, errors %d",
            status.forwarded, status.dead_lettered, status.acked, status.errors,
        )  # fmt: skip


async def _report_status(runner: Bridge, every_s: float) -> None:
    if every_s <= 0:
        return
    while True:
        await asyncio.sleep(every_s)
        status = runner.status
        log.info(
            "forwarded %d, dead-lettered %d, acknowledged %d, errors %d, lag %s",
            status.forwarded, status.dead_lettered, status.acked, status.errors,
            "?" if status.lag is None else status.lag,
        )  # fmt: skip


def _run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop when it is installed: pulling and producing are CPU-bound in this process."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
