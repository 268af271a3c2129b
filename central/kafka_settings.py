"""How to reach Kafka and which topics the event log lives in, plus creating those topics.

:class:`KafkaSettings` is pure data turned into aiokafka options, like
:class:`runtime.nats.NatsSettings` for NATS. :class:`KafkaSecurity` declares, once, how a
client proves itself and protects the link (``security_protocol`` PLAINTEXT, SSL,
SASL_PLAINTEXT or SASL_SSL; SASL PLAIN or SCRAM with a password read from a file; a CA
and a client certificate); every central command that talks to Kafka takes its fields as
flags and ``PROXIMA_KAFKA_*`` variables. :func:`ensure_topics` creates the events topic
and its dead-letter topic when they are absent and leaves existing ones as they are: three
replicas, two of them in sync for a write, clamped with a warning to the brokers the
cluster has.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from central.errors import CentralError
from protocol.errors import ProtocolError
from protocol.subjects import KAFKA_EVENTS_TOPIC
from runtime.nats import read_secret
from runtime.settings import setting

log = logging.getLogger("proxima.central.kafka")

KAFKA_EVENTS_DLQ_TOPIC: Final = f"{KAFKA_EVENTS_TOPIC}.dlq"
"""Messages from the EVENTS stream that are not valid events, kept byte for byte."""

DEFAULT_BOOTSTRAP: Final = "127.0.0.1:9092"


class KafkaSettingsError(CentralError):
    code = "bad_kafka_settings"


class KafkaTopicError(CentralError):
    """A topic could not be created (other than because it already exists)."""

    code = "kafka_topic_failed"


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSecurity:
    """How a Kafka client authenticates and encrypts; the default is a plaintext link."""

    kafka_security_protocol: SecurityProtocol = setting(
        "PLAINTEXT",
        help="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS).",
    )
    kafka_sasl_mechanism: SaslMechanism = setting(
        "SCRAM-SHA-512", help="SASL mechanism under SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_username: str | None = setting(None, help="SASL user name (SASL_* only).")
    kafka_password: str | None = setting(
        None, cli=False, secret=True, help="SASL password (file or environment only)."
    )
    kafka_password_file: Path | None = setting(None, help="File holding the SASL password.")
    kafka_tls_ca: Path | None = setting(
        None,
        help="CA certificate the brokers are checked against (SSL, SASL_SSL); the system's "
        "CAs without it.",
    )
    kafka_tls_cert: Path | None = setting(
        None, help="Client certificate for the brokers (with the key; SSL, SASL_SSL)."
    )
    kafka_tls_key: Path | None = setting(
        None, help="Client key for the brokers (with the certificate)."
    )

    def __post_init__(self) -> None:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        tls = self.kafka_security_protocol.endswith("SSL")
        has_password = self.kafka_password is not None or self.kafka_password_file is not None
        if self.kafka_password is not None and self.kafka_password_file is not None:
            raise KafkaSettingsError(
                "give kafka_password or kafka_password_file, not both", field="kafka_password"
            )
        if sasl and (self.kafka_username is None or not has_password):
            raise KafkaSettingsError(
                f"{self.kafka_security_protocol} needs kafka_username and a password",
                field="kafka_username",
            )
        if not sasl and (self.kafka_username is not None or has_password):
            raise KafkaSettingsError(
                "kafka_username and its password are for SASL_PLAINTEXT or SASL_SSL",
                field="kafka_security_protocol",
            )
        files = (self.kafka_tls_ca, self.kafka_tls_cert, self.kafka_tls_key)
        if not tls and any(f is not None for f in files):
            raise KafkaSettingsError(
                "kafka_tls_* settings are for SSL or SASL_SSL", field="kafka_security_protocol"
            )
        if (self.kafka_tls_cert is None) != (self.kafka_tls_key is None):
            raise KafkaSettingsError(
                "kafka_tls_cert and kafka_tls_key go together", field="kafka_tls_cert"
            )

    def client_options(self) -> dict[str, Any]:
        """The security options every aiokafka client takes (producer, consumer, admin);
        the password file is read now."""
        protocol = self.kafka_security_protocol
        options: dict[str, Any] = {"security_protocol": protocol}
        if protocol.endswith("SSL"):
            options["ssl_context"] = self.ssl_context()
        if protocol.startswith("SASL_"):
            password = self.kafka_password
            if self.kafka_password_file is not None:
                try:
                    password = read_secret(self.kafka_password_file, "kafka_password_file")
                except ProtocolError as exc:
                    raise KafkaSettingsError(exc.message, field="kafka_password_file") from exc
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_username
            options["sasl_plain_password"] = password
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """Checks the brokers' certificates and host names against the CA."""
        ca, cert, key = self.kafka_tls_ca, self.kafka_tls_cert, self.kafka_tls_key
        try:
            context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
            if cert is not None:
                context.load_cert_chain(str(cert), str(key) if key is not None else None)
            return context
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSettingsError(
                f"cannot load the Kafka TLS files: {exc}", field="kafka_tls_ca"
            ) from exc


PLAINTEXT: Final = KafkaSecurity()


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: tuple[str, ...] = (DEFAULT_BOOTSTRAP,)
    topic: str = KAFKA_EVENTS_TOPIC
    dlq_topic: str = KAFKA_EVENTS_DLQ_TOPIC
    client_id: str = "proxima-bridge"
    replication_factor: int = 3  # clamped to the brokers the cluster has, with a warning
    min_insync_replicas: int = 2  # so acks=all means two copies; clamped to the replicas
    security: KafkaSecurity = field(default=PLAINTEXT)
    linger_ms: int = 0  # the bridge hands over whole batches: waiting adds latency only
    max_batch_bytes: int = 512 * 1024  # per partition and request; brokers allow 1 MiB
    request_timeout_ms: int = 30_000  # also how long a produce is retried before it fails

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not all(s.strip() for s in self.bootstrap_servers):
            raise KafkaSettingsError("at least one Kafka bootstrap server is needed")
        for server in self.bootstrap_servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise KafkaSettingsError(f"a bootstrap server is HOST:PORT, got {server!r}")
        if not self.topic or not self.dlq_topic or self.topic == self.dlq_topic:
            raise KafkaSettingsError("topic and dlq_topic must be two different names")
        if self.replication_factor < 1:
            raise KafkaSettingsError("replication_factor must be at least 1")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise KafkaSettingsError(
                "min_insync_replicas must be between 1 and replication_factor",
                field="min_insync_replicas",
            )
        if self.linger_ms < 0 or self.max_batch_bytes < 1024 or self.request_timeout_ms < 1:
            raise KafkaSettingsError("linger_ms, max_batch_bytes or request_timeout_ms is invalid")

    @classmethod
    def from_bootstrap(cls, bootstrap: str, **extra: Any) -> KafkaSettings:
        """Comma-separated HOST:PORT list, as ``--kafka`` and ``PROXIMA_KAFKA_BOOTSTRAP`` give."""
        servers = tuple(s.strip() for s in bootstrap.split(",") if s.strip())
        return cls(bootstrap_servers=servers, **extra)

    def producer_options(self, *, idempotent: bool) -> dict[str, Any]:
        """Options for ``AIOKafkaProducer``: every write waits for all in-sync replicas."""
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": idempotent,
            "linger_ms": self.linger_ms,
            "max_batch_size": self.max_batch_bytes,
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.client_options(),
        }

    def consumer_options(self) -> dict[str, Any]:
        """Options for ``AIOKafkaConsumer`` shared by every consumer: servers, id, security."""
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            **self.security.client_options(),
        }

    def admin_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": f"{self.client_id}-admin",
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.client_options(),
        }


async def ensure_topics(settings: KafkaSettings, *, partitions: int) -> TopicPlan:
    """Creates the events and dead-letter topics if absent; an existing topic is kept as is.

    The replication asked for is clamped, with a warning, to the brokers the cluster has
    (one broker cannot hold three copies). Returns the plan the topics were created with.
    Raises :class:`KafkaTopicError` when the broker refuses or cannot be reached.
    """
    if partitions < 1:
        raise KafkaSettingsError("partitions must be at least 1")
    admin = AIOKafkaAdminClient(**settings.admin_options())
    try:
        await admin.start()
        brokers = len((await admin.describe_cluster()).get("brokers") or [])
        plan = topic_plan(settings, brokers)
        config = {"min.insync.replicas": str(plan.min_insync_replicas)}
        wanted = [
            NewTopic(settings.topic, num_partitions=partitions,
                     replication_factor=plan.replication_factor, topic_configs=config),
            NewTopic(settings.dlq_topic, num_partitions=1,
                     replication_factor=plan.replication_factor, topic_configs=config),
        ]  # fmt: skip
        response = await admin.create_topics(wanted)
        for topic, error_code, *detail in response.topic_errors:
            if error_code == 0:
                log.info(
                    "created Kafka topic %s (%d replicas, min.insync.replicas %d)",
                    topic, plan.replication_factor, plan.min_insync_replicas,
                )  # fmt: skip
                continue
            error = for_code(error_code)
            if error is TopicAlreadyExistsError:
                continue
            message = detail[0] if detail and detail[0] else error.__name__
            raise KafkaTopicError(f"Kafka refused to create topic {topic!r}: {message}")
    except KafkaError as exc:
        raise KafkaTopicError(f"cannot create Kafka topics: {exc!r}") from exc
    finally:
        await admin.close()
    return plan


@dataclass(frozen=True, slots=True)
class TopicPlan:
    replication_factor: int
    min_insync_replicas: int
    brokers: int


def topic_plan(settings: KafkaSettings, brokers: int) -> TopicPlan:
    """The replication the topics get on a cluster of ``brokers``: as asked where it fits."""
    replicas = settings.replication_factor
    in_sync = settings.min_insync_replicas
    if brokers >= 1 and replicas > brokers:
        log.warning(
            "the Kafka cluster has %d broker(s): topics get %d replica(s), not the %d asked "
            "for, and min.insync.replicas %d; acks=all then means %d copy(ies)",
            brokers, brokers, replicas, min(in_sync, brokers), min(in_sync, brokers),
        )  # fmt: skip
        replicas = brokers
    return TopicPlan(replicas, min(in_sync, replicas), brokers)
