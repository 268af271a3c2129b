"""How to reach Kafka and which topics the event log lives in, plus creating those topics.

:class:`KafkaSettings` is pure data turned into aiokafka options, like
:class:`runtime.nats.NatsSettings` for NATS. :func:`ensure_topics` creates the events topic
and its dead-letter topic when they are absent and leaves existing ones as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from central.errors import CentralError
from protocol.subjects import KAFKA_EVENTS_TOPIC

log = logging.getLogger("proxima.central.kafka")

KAFKA_EVENTS_DLQ_TOPIC: Final = f"{KAFKA_EVENTS_TOPIC}.dlq"
"""Messages from the EVENTS stream that are not valid events, kept byte for byte."""

DEFAULT_BOOTSTRAP: Final = "127.0.0.1:9092"


class KafkaSettingsError(CentralError):
    code = "bad_kafka_settings"


class KafkaTopicError(CentralError):
    """A topic could not be created (other than because it already exists)."""

    code = "kafka_topic_failed"


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: tuple[str, ...] = (DEFAULT_BOOTSTRAP,)
    topic: str = KAFKA_EVENTS_TOPIC
    dlq_topic: str = KAFKA_EVENTS_DLQ_TOPIC
    client_id: str = "proxima-bridge"
    replication_factor: int = 1
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
        }

    def admin_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": f"{self.client_id}-admin",
            "request_timeout_ms": self.request_timeout_ms,
        }


async def ensure_topics(settings: KafkaSettings, *, partitions: int) -> None:
    """Creates the events and dead-letter topics if absent; an existing topic is kept as is.

    Raises :class:`KafkaTopicError` when the broker refuses or cannot be reached.
    """
    if partitions < 1:
        raise KafkaSettingsError("partitions must be at least 1")
    wanted = [
        NewTopic(settings.topic, num_partitions=partitions,
                 replication_factor=settings.replication_factor),
        NewTopic(settings.dlq_topic, num_partitions=1,
                 replication_factor=settings.replication_factor),
    ]  # fmt: skip
    admin = AIOKafkaAdminClient(**settings.admin_options())
    try:
        await admin.start()
        response = await admin.create_topics(wanted)
        for topic, error_code, *detail in response.topic_errors:
            if error_code == 0:
                log.info("created Kafka topic %s", topic)
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
