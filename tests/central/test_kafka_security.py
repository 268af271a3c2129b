"""Kafka security settings and topic replication, as far as the Tansu broker goes.

The aiokafka options are checked as built from :class:`KafkaSecurity` (TLS context, SASL
fields, the password read from its file) and handed to real aiokafka clients. Tansu 0.6
serves plaintext only: its ``--cert`` flag is accepted but the listener never speaks TLS,
and ``--cert`` cannot be given with ``--key``; with ``--authentication`` it offers no PLAIN
and, on its in-memory storage, ``tansu user create`` cannot reach it to make a SCRAM user.
So against the broker the tests show that an SSL client refuses the plaintext listener
rather than falling back, and that topic replication is clamped to its one broker.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from central.kafka_settings import (
    KafkaSecurity,
    KafkaSettings,
    KafkaSettingsError,
    ensure_topics,
    topic_plan,
)
from runtime.settings import load_settings
from tests.tls import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def password_file(tmp_path: Path, text: str = "scram-secret") -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol() -> None:
    assert KafkaSecurity().client_options() == {"security_protocol": "PLAINTEXT"}


def test_ssl_checks_the_broker_against_the_ca_and_presents_the_client_cert(pki: Pki) -> None:
    security = KafkaSecurity(
        kafka_security_protocol="SSL",
        kafka_tls_ca=pki.ca,
        kafka_tls_cert=pki.client.cert,
        kafka_tls_key=pki.client.key,
    )
    options = security.client_options()
    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert "Proxima Test CA" in str(context.get_ca_certs())


def test_sasl_ssl_with_scram_reads_the_password_from_its_file(pki: Pki, tmp_path: Path) -> None:
    env = {
        "PROXIMA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PROXIMA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "PROXIMA_KAFKA_USERNAME": "bridge",
        "PROXIMA_KAFKA_PASSWORD_FILE": str(password_file(tmp_path)),
        "PROXIMA_KAFKA_TLS_CA": str(pki.ca),
    }
    security = load_settings(KafkaSecurity, table="bridge", env=env)
    options = KafkaSettings.from_bootstrap("b1:9093,b2:9093", security=security).producer_options(
        idempotent=True
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "bridge",
        "scram-secret",
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "scram-secret" not in repr(security)


async def test_aiokafka_takes_the_options_of_every_client(tmp_path: Path) -> None:
    settings = KafkaSettings.from_bootstrap(
        "127.0.0.1:9093",
        security=KafkaSecurity(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_username="trainer",
            kafka_password_file=password_file(tmp_path),
        ),
    )
    producer = AIOKafkaProducer(**settings.producer_options(idempotent=False))
    consumer = AIOKafkaConsumer(**settings.consumer_options(), group_id="g")
    admin = AIOKafkaAdminClient(**settings.admin_options())
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert client._security_protocol == "SASL_PLAINTEXT"
            assert client._sasl_mechanism == "SCRAM-SHA-512"
            assert client._sasl_plain_password == "scram-secret"
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_username"),
        ({"kafka_username": "u", "kafka_password": "p"}, "for SASL_PLAINTEXT or SASL_SSL"),
        ({"kafka_tls_ca": Path("ca.pem")}, "for SSL or SASL_SSL"),
        ({"kafka_security_protocol": "SSL", "kafka_tls_cert": Path("c.pem")}, "go together"),
    ],
)
def test_settings_that_cannot_work_are_refused(fields: dict[str, object], complaint: str) -> None:
    with pytest.raises(KafkaSettingsError, match=complaint):
        KafkaSecurity(**fields)  # type: ignore[arg-type]


def test_an_unreadable_password_file_names_the_setting(tmp_path: Path) -> None:
    security = KafkaSecurity(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_username="u",
        kafka_password_file=tmp_path / "absent",
    )
    with pytest.raises(KafkaSettingsError) as caught:
        security.client_options()
    assert caught.value.field == "kafka_password_file"


async def test_an_ssl_client_refuses_a_plaintext_broker(pki: Pki, kafka_bootstrap: str) -> None:
    settings = KafkaSettings.from_bootstrap(
        kafka_bootstrap,
        request_timeout_ms=3000,
        security=KafkaSecurity(kafka_security_protocol="SSL", kafka_tls_ca=pki.ca),
    )
    producer = AIOKafkaProducer(**settings.producer_options(idempotent=False))
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()
    plain = AIOKafkaProducer(
        **KafkaSettings.from_bootstrap(kafka_bootstrap).producer_options(idempotent=False)
    )
    await plain.start()  # the same broker, in plaintext: the refusal above was the TLS
    await plain.stop()


def test_replication_defaults_to_three_copies_two_in_sync() -> None:
    settings = KafkaSettings()
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    assert topic_plan(settings, brokers=5).replication_factor == 3
    assert topic_plan(settings, brokers=5).min_insync_replicas == 2
    with pytest.raises(KafkaSettingsError, match="min_insync_replicas"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)


async def test_topics_on_a_single_broker_get_one_replica_with_a_warning(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"proxima.events.rf-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings.from_bootstrap(kafka_bootstrap, topic=topic, dlq_topic=f"{topic}.dlq")
    with caplog.at_level(logging.WARNING, logger="proxima.central.kafka"):
        plan = await ensure_topics(settings, partitions=2)
    assert (plan.brokers, plan.replication_factor, plan.min_insync_replicas) == (1, 1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 broker(s)" in w and "not the 3 asked for" in w for w in warnings), warnings
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = described[0]["partitions"]
    assert len(partitions) == 2 and all(len(p["replicas"]) == 1 for p in partitions)
