"""``proxima central train --follow``: learn from the event topic and publish bundles, until
stopped."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click
import nats.errors
from aiokafka.errors import KafkaError

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
from central.cli.serving import serve
from central.kafka_settings import KafkaSettings
from central.rollout.operations import bundle_release
from central.trainer.pipeline import TrainerConfig
from central.trainer.service import TrainerService, TrainerServiceConfig
from protocol.keys import load_private_key
from protocol.subjects import KAFKA_EVENTS_TOPIC, check_token
from runtime.supervisor import redact

log = logging.getLogger("proxima.central.trainer")


@click.command("train")
@click.option(
    "--follow",
    is_flag=True,
    help="Consume the event topic and retrain continuously (the only mode for now).",
)
@nats_option(": bundles and rollout records go there")
@kafka_option
@signing_key_option
@click.option(
    "--regions",
    default="",
    help="Regions, comma-separated, whose stable bundle each published bundle becomes. "
    "Empty: publish only, and leave promotion to a rollout policy.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./proxima-trainer"),
    show_default=True,
    help="Where the recent event log and the training state are kept across restarts.",
)
@click.option(
    "--retrain-events",
    type=click.IntRange(1),
    default=50_000,
    show_default=True,
    help="Retrain after this many new events.",
)
@click.option(
    "--retrain-interval",
    type=click.FloatRange(1.0),
    default=3600.0,
    show_default=True,
    help="Retrain after this many seconds, when any new event arrived.",
)
@click.option(
    "--min-events",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Do not train on fewer events than this.",
)
@click.option("--topic", default=KAFKA_EVENTS_TOPIC, show_default=True, help="Kafka topic.")
@canary_options
def train_follow(
    follow: bool,
    nats_url: str,
    kafka_bootstrap: str,
    signing_key: Path | None,
    regions: str,
    state_dir: Path,
    retrain_events: int,
    retrain_interval: float,
    min_events: int,
    topic: str,
    **canary: Any,
) -> None:
    """Keep a recent event log from Kafka, retrain on it, and publish bundles that pass the
    gate against the stable bundle; each retrain is logged with its events, time, metrics,
    gate result and published version."""
    if not follow:
        raise CommandError("only --follow is supported: train continuously from the topic")
    if signing_key is None:
        raise CommandError(
            "no signing key: pass --signing-key PATH or set PROXIMA_SIGNING_KEY "
            "(create one with 'proxima keys generate --out DIR')"
        )
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for name in ("central", "proxima"):  # the libraries' own INFO lines are left out
        logging.getLogger(name).setLevel(logging.INFO)
    with reported_errors():
        key_pem = signing_key.read_bytes()
        record_signer = load_private_key(key_pem)  # fail now; it also signs rollout records
        targets = tuple(
            check_token(region.strip(), "region") for region in regions.split(",") if region.strip()
        )
        config = TrainerServiceConfig(
            nats=nats_connection(nats_url, name="proxima-trainer"),
            kafka=KafkaSettings.from_bootstrap(
                kafka_bootstrap,
                topic=topic,
                dlq_topic=f"{topic}.dlq",
                client_id="proxima-trainer",
                security=kafka_security(),
            ),
            state_dir=state_dir,
            private_key_pem=key_pem,
            regions=targets,
            on_published=bundle_release(targets, rollout_policy(canary), record_signer),
            retrain_events=retrain_events,
            retrain_interval_s=retrain_interval,
            min_events=min_events,
            trainer=TrainerConfig(),
        )
        try:
            asyncio.run(_serve(TrainerService(config)))
        except KafkaError as exc:
            raise CommandError(f"Kafka at {kafka_bootstrap}: {exc}") from exc
        except nats.errors.Error as exc:
            raise CommandError(f"NATS at {redact(nats_url)}: {redact(str(exc))}") from exc


async def _serve(service: TrainerService) -> None:
    config = service.config
    log.info(
        "training from %s into %s; promoting to %s",
        config.kafka.topic,
        config.state_dir,
        ", ".join(config.regions) or "no region (publish only)",
    )
    try:
        await serve([service], watch=[service.wait_stopped])
    finally:
        status = service.status
        log.info(
            "trainer stopped: consumed %d records (%d bad), kept %d events, %d retrains, "
            "published %s",
            status.consumed,
            status.bad_records,
            status.kept,
            status.attempts,
            status.published or "nothing",
        )
