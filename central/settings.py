"""The central services' settings: one frozen dataclass per role, one TOML table each.

``[bridge]`` :class:`BridgeSettings`, ``[trainer]`` :class:`TrainerSettings`,
``[monitor]`` :class:`MonitorRoleSettings`, ``[rollout]`` :class:`RolloutSettings`. A field
that several roles share (``nats_url``, ``kafka_bootstrap``, ``regions``) is declared once
below and means the same everywhere, so ``proxima central run``, ``central bridge``,
``central train --follow`` and ``central controller`` cannot drift apart: their flags,
defaults and ranges are generated from these classes (:func:`runtime.settings.settings_options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from central.bridge_jetstream import StreamLimits
from protocol.errors import ProtocolError
from protocol.subjects import KAFKA_EVENTS_TOPIC, check_token
from runtime.nats import NatsSettings, nats_url_setting
from runtime.settings import SettingsError, check_ranges, setting

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"


def _kafka_setting() -> Any:
    return setting(
        DEFAULT_KAFKA_BOOTSTRAP,
        flag="--kafka",
        help="Kafka bootstrap servers, HOST:PORT comma-separated.",
    )


def _topic_setting() -> Any:
    return setting(
        KAFKA_EVENTS_TOPIC, help="Kafka topic for events; invalid messages go to TOPIC.dlq."
    )


def _partitions_setting() -> Any:
    return setting(
        6, min=1, max=10_000, help="Partitions of the events topic when the bridge creates it."
    )


def _regions_setting() -> Any:
    return setting(
        (),
        help="Regions, comma-separated, whose stable bundle each published bundle becomes "
        "(or where it is rolled out, with --canary-steps). Empty: publish only.",
    )


def _check_regions(regions: tuple[str, ...]) -> None:
    for region in regions:
        try:
            check_token(region, "region")
        except ProtocolError as exc:
            raise SettingsError(exc.message, field="regions") from exc


def _nats(url: str, name: str) -> NatsSettings:
    try:
        return NatsSettings.from_url(url, name=name)
    except ProtocolError as exc:
        raise SettingsError(exc.message, field="nats_url") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeSettings:
    nats_url: str = nats_url_setting()
    kafka_bootstrap: str = _kafka_setting()
    topic: str = _topic_setting()
    partitions: int = _partitions_setting()
    replication_factor: int = setting(
        3,
        min=1,
        max=100,
        help="Replicas of the topics when the bridge creates them (fewer, with a warning, "
        "when the cluster has fewer brokers).",
    )
    min_insync_replicas: int = setting(
        2,
        min=1,
        max=100,
        help="min.insync.replicas of the topics the bridge creates: copies acks=all waits for "
        "(at most the replicas).",
    )
    idempotence: bool = setting(
        True,
        help="Idempotent Kafka producer; turn off for brokers that refuse it (such as Tansu).",
    )
    durable: str = setting(
        "proxima-bridge",
        help="Name of the durable JetStream consumer; bridges sharing it share the work.",
    )
    batch: int = setting(500, min=1, max=10_000, help="Messages pulled and produced per round.")
    ack_wait_s: float = setting(
        60.0,
        min=1.0,
        max=3600.0,
        duration=True,
        flag="--ack-wait",
        help="How long before JetStream redelivers a message the bridge did not acknowledge.",
    )
    status_every_s: float = setting(
        30.0,
        min=0.0,
        duration=True,
        flag="--status-every",
        help="Log counters and lag this often (0: never).",
    )

    stream_max_bytes: int = setting(
        8 << 30,
        min=1 << 20,
        max=1 << 50,
        help="Bytes the EVENTS stream holds, when the bridge creates it.",
    )
    stream_max_age_s: float = setting(
        7 * 86_400.0,
        min=60.0,
        max=365 * 86_400.0,
        duration=True,
        help="How long the EVENTS stream keeps an event, when the bridge creates it.",
    )
    stream_replicas: int = setting(
        1, min=1, max=5, help="Replicas of the EVENTS stream, when the bridge creates it."
    )
    stream_discard: Literal["old", "new"] = setting(
        "old", help="What the full EVENTS stream lets go: the oldest events, or new ones."
    )

    def __post_init__(self) -> None:
        check_ranges(self)

    def nats_settings(self) -> NatsSettings:
        return _nats(self.nats_url, "proxima-bridge")

    def stream_limits(self) -> StreamLimits:
        return StreamLimits(
            max_bytes=self.stream_max_bytes,
            max_age_s=self.stream_max_age_s,
            replicas=self.stream_replicas,
            discard=self.stream_discard,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainerSettings:
    nats_url: str = nats_url_setting(": bundles and rollout records go there")
    kafka_bootstrap: str = _kafka_setting()
    topic: str = _topic_setting()
    signing_key: Path | None = setting(
        None, help="Private key that signs bundles (see 'proxima keys generate')."
    )
    regions: tuple[str, ...] = _regions_setting()
    state_dir: Path = setting(
        Path("./proxima-trainer"),
        help="Where the recent event log and the training state are kept across restarts.",
    )
    retrain_events: int = setting(50_000, min=1, help="Retrain after this many new events.")
    retrain_interval_s: float = setting(
        3600.0,
        min=1.0,
        duration=True,
        flag="--retrain-interval",
        help="Retrain after this long, when any new event arrived.",
    )
    min_events: int = setting(10_000, min=1, help="Do not train on fewer events than this.")

    def __post_init__(self) -> None:
        check_ranges(self)
        _check_regions(self.regions)

    def nats_settings(self) -> NatsSettings:
        return _nats(self.nats_url, "proxima-trainer")


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorRoleSettings:
    nats_url: str = nats_url_setting()
    metrics_port: int | None = setting(
        None, min=1, max=65535, help="Serve central's Prometheus metrics on this port."
    )
    metrics_host: str = setting("127.0.0.1", help="Address the metrics port listens on.")
    retention_s: float = setting(
        900.0,
        min=1.0,
        max=86_400.0,
        duration=True,
        flag="--retention",
        help="How much telemetry the monitor keeps (and answers over).",
    )

    def __post_init__(self) -> None:
        check_ranges(self)

    def nats_settings(self) -> NatsSettings:
        return _nats(self.nats_url, "proxima-monitor")


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSettings:
    nats_url: str = nats_url_setting()
    rollout_tick_s: float = setting(
        1.0,
        min=0.05,
        max=60.0,
        duration=True,
        flag="--rollout-tick",
        help="Time between two looks of the rollout controller at the active rollouts.",
    )
    canary_steps: tuple[int, ...] = setting(
        (),
        help="Roll each new bundle out in these canary percent steps (e.g. 5,25,50,100) "
        "instead of promoting it at once.",
    )
    canary_interval_s: float = setting(
        600.0, min=0.0, min_open=True, duration=True, flag="--canary-interval",
        help="How long each canary step runs.",
    )  # fmt: skip
    canary_max_p99_ms: float | None = setting(
        None, min=0.0, min_open=True, help="Roll back a canary whose p99 answer time is above this."
    )
    canary_max_error_rate: float = setting(
        0.01, min=0.0, max=1.0, help="Roll back a canary failing more often."
    )
    canary_min_ctr_ratio: float | None = setting(
        None,
        min=0.0,
        min_open=True,
        help="Roll back a canary whose CTR is confidently below this ratio of stable's.",
    )
    canary_min_requests: int = setting(100, min=0, help="Canary answers a step needs to advance.")
    canary_shadow: bool = setting(False, help="Score each new bundle unseen for one step first.")

    def __post_init__(self) -> None:
        check_ranges(self)
        for percent in self.canary_steps:
            if not 0 <= percent <= 100:
                raise SettingsError("canary_steps are percentages 0-100", field="canary_steps")

    def nats_settings(self) -> NatsSettings:
        return _nats(self.nats_url, "proxima-rollout")


@dataclass(frozen=True, slots=True, kw_only=True)
class LakeWriterSettings:
    """``[lake]``: the lake writer, a member of a Kafka consumer group (central.lake.writer)."""

    kafka_bootstrap: str = _kafka_setting()
    topic: str = _topic_setting()
    lake_dir: Path = setting(
        Path("./proxima-lake"), flag="--lake", help="Root directory of the event lake."
    )
    group_id: str = setting(
        "proxima-lake", help="Kafka consumer group of the lake writers; writers in it share "
        "the partitions.",
    )  # fmt: skip
    file_bytes: int = setting(
        64 * 1024 * 1024, min=1024, max=4 * 1024**3,
        help="Commit a partition's rows once this many bytes of events are held.",
    )  # fmt: skip
    roll_interval_s: float = setting(
        60.0, min=0.05, max=86_400.0, duration=True, flag="--roll-interval",
        help="Commit a partition's rows once the oldest has been held this long.",
    )  # fmt: skip
    max_buffer_bytes: int = setting(
        256 * 1024 * 1024, min=1024, max=64 * 1024**3,
        help="Bytes of events held over all partitions; above it the largest is committed.",
    )  # fmt: skip
    retention_days: int = setting(
        0, min=0, max=100_000, help="Delete days older than this many days (0: keep all)."
    )
    compact_min_files: int = setting(
        8, min=2, max=100_000,
        help="Compact a day's files of one partition into one once there are this many.",
    )  # fmt: skip
    maintenance_interval_s: float = setting(
        600.0, min=0.05, max=86_400.0, duration=True, flag="--maintenance-interval",
        help="How often retention and compaction run.",
    )  # fmt: skip
    max_poll_records: int = setting(
        5_000, min=1, max=1_000_000, help="Kafka records read per poll."
    )
    session_timeout_s: float = setting(
        10.0, min=1.0, max=300.0, duration=True, flag="--session-timeout",
        help="How long the group waits for a silent writer before giving its partitions "
        "to the others.",
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_ranges(self)
