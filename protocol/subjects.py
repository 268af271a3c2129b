"""Names on the bus: NATS subjects, the JetStream stream, KV and object buckets, Kafka topic.

Regions and nodes become subject tokens, so they are restricted to ``[A-Za-z0-9_-]``: a
dot or a wildcard in a region name would silently route events elsewhere.
"""

from __future__ import annotations

import re
from typing import Final

from protocol.errors import NameError_

EVENTS_STREAM: Final = "EVENTS"
EVENTS_SUBJECTS: Final = "events.>"
MODELS_BUCKET: Final = "proxima-models"
ROLLOUT_BUCKET: Final = "proxima-rollout"
RULES_BUCKET: Final = "proxima-rules"
CATALOG_BUCKET: Final = "proxima-catalog"  # KV: item id -> protocol.catalog item
ERASURES_BUCKET: Final = "proxima-erasures"  # KV: sha256 of a user id -> erasure record
KAFKA_EVENTS_TOPIC: Final = "proxima.events"
KAFKA_CATALOG_TOPIC: Final = "proxima.catalog"  # compacted, keyed by item id
MSG_ID_HEADER: Final = "Nats-Msg-Id"
DUPLICATE_WINDOW_S: Final = 120.0
TELEMETRY_SUBJECTS: Final = "telemetry.>"
MONITOR_REQUEST_SUBJECT: Final = "proxima.monitor.latency"  # request/reply: ask the monitor

_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_token(value: str, what: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise NameError_(
            f"{what} must be 1-64 characters of A-Z a-z 0-9 _ -, got {value!r:.80}", field=what
        )
    return value


def events_subject(region: str, node: str) -> str:
    return f"events.{check_token(region, 'region')}.{check_token(node, 'node')}"


def telemetry_subject(region: str, node: str) -> str:
    return f"telemetry.{check_token(region, 'region')}.{check_token(node, 'node')}"


def bundle_object_name(version: int) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise NameError_(
            f"bundle version must be a positive integer, got {version!r:.40}", field="version"
        )
    return f"bundle-{version}"
