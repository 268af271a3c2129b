"""Typed edge settings, from a TOML file, ``PROXIMA_*`` environment variables and flags.

Every field is declared once with :func:`runtime.settings.setting` (default, help, range);
the loader, the range checks and the flags of ``proxima-edge serve`` are derived from that
declaration (see :mod:`runtime.settings`). Later sources win: file (its ``[edge]`` table,
or the whole file when it has no tables) < environment < flags. An unknown key in the file
or among the flags is an error (a typo in a setting must not silently fall back to a
default); ``PROXIMA_*`` variables that name no edge setting are left alone, since other
commands (the trainer's ``PROXIMA_SIGNING_KEY``, say) share the prefix. The environment is
only read by the entry point, which passes it in; nothing here looks at ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_node.uplink.uplink import FsyncPolicy
from protocol.errors import ProtocolError
from protocol.subjects import check_token
from runtime.nats import NatsClientSettings, NatsSettings, read_secret
from runtime.settings import ENV_PREFIX, SettingsError, check_ranges, load_settings, setting

__all__ = ["ENV_PREFIX", "EdgeSettings", "FsyncPolicy", "LogLevel", "SettingsError"]

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class EdgeSettings(NatsClientSettings):  # the nats_* credentials and TLS fields
    region: str = setting(help="Region name (letters, digits, _ and -).")
    node: str = setting(help="Node name within the region.")
    public_key: Path = setting(help="Public key bundles must verify against.")
    bundle: Path | None = setting(None, help="Bundle file to serve.")
    host: str = setting("127.0.0.1", help="Address to listen on.")
    port: int = setting(8080, min=1, max=65535, help="Port to listen on.")
    redis: str | None = setting(
        None,
        help="Redis URL: share session windows with the region's other replicas "
        "(rediss:// for TLS).",
    )
    redis_username: str | None = setting(None, help="Redis ACL user (with its password).")
    redis_password: str | None = setting(
        None, cli=False, secret=True, help="Redis password (file or environment only)."
    )
    redis_password_file: Path | None = setting(None, help="File holding the Redis password.")
    redis_tls_ca: Path | None = setting(
        None, help="CA certificate the Redis server is checked against (rediss:// URLs)."
    )
    redis_tls_cert: Path | None = setting(None, help="Client certificate for Redis (with the key).")
    redis_tls_key: Path | None = setting(None, help="Client key for Redis (with the certificate).")
    nats_url: str | None = setting(
        None,
        flag="--nats",
        help="NATS URL(s), comma-separated: publish events to JetStream and follow the "
        "region's rollout for bundles (instead of, or besides, --bundle).",
    )
    bundle_cache_dir: Path = setting(
        Path("./proxima-bundles"),
        help="Where the last good bundle is kept, for starts without NATS.",
    )
    publish_batch: int = setting(
        256, min=1, max=10_000, help="Events in flight to JetStream at once."
    )
    rules: Path | None = setting(None, help="Rules document (JSON or YAML).")
    spool_dir: Path = setting(
        Path("./proxima-spool"), help="Where accepted events wait for the bus."
    )
    spool_max_bytes: int = setting(
        1 << 30, min=1, max=1 << 40, help="Bytes the spool may hold before events are refused."
    )
    spool_fsync: FsyncPolicy = setting(
        "interval", help="When accepted events reach the disk: always, interval or never."
    )
    spool_fsync_interval_s: float = setting(
        0.05,
        min=0,
        min_open=True,
        max=60.0,
        duration=True,
        help="Time between fsyncs under 'interval'.",
    )
    uplink_max_pending_events: int = setting(
        10_000,
        min=1,
        max=1_000_000,
        help="Events waiting for the disk at once before the edge answers 503.",
    )
    sessions_max: int = setting(
        200_000, min=1, max=100_000_000, help="Session windows held in memory."
    )
    sessions_max_bytes: int = setting(
        256 << 20, min=1, max=1 << 40, help="Bytes of session windows held in memory."
    )
    rank_cache_sessions: int = setting(
        4096,
        min=1,
        max=10_000_000,
        help="Recently ranked windows whose candidates and feature rows are kept.",
    )
    max_body_bytes: int = setting(
        512 * 1024, min=1, max=64 << 20, help="Largest request body accepted."
    )
    default_k: int = setting(20, min=1, max=100, help="Items answered when a request names no k.")
    max_concurrency: int = setting(
        512, min=1, max=1_000_000, help="Requests served at once before 503."
    )
    session_rate: float = setting(
        20.0, min=0, min_open=True, max=1e9, help="Events and requests per second per session."
    )
    session_burst: int = setting(
        60, min=1, max=1_000_000_000, help="Burst a session may spend at once."
    )
    ip_rate: float = setting(
        500.0, min=0, min_open=True, max=1e9, help="Requests per second per client address."
    )
    ip_burst: int = setting(
        1000, min=1, max=1_000_000_000, help="Burst a client address may spend at once."
    )
    rate_limit_keys: int = setting(
        100_000,
        min=1,
        max=100_000_000,
        help="Rate-limit buckets tracked before the oldest are forgotten.",
    )
    cors_origins: tuple[str, ...] = setting(
        (), help="Origins whose pages may call the API (comma-separated)."
    )
    api_keys: tuple[str, ...] = setting(
        (),
        cli=False,
        secret=True,
        help="Keys server-side ingestion presents (comma-separated; file or environment only).",
    )
    site_keys: tuple[str, ...] = setting(
        (),
        help="Publishable keys browser pages send, each bound to one origin as KEY=ORIGIN "
        "(comma-separated; list a key once per origin it serves; two keys at once to rotate).",
    )
    feedback_secret: str | None = setting(
        None,
        cli=False,
        secret=True,
        help="Secret that signs request ids, shared by a region's replicas (file or "
        "environment only; at least 16 bytes).",
    )
    feedback_secret_file: Path | None = setting(
        None, help="File holding the secret that signs request ids (instead of feedback_secret)."
    )
    trusted_public_keys: tuple[Path, ...] = setting(
        (), help="More public keys bundles may verify against, besides public_key (rotation)."
    )
    revoked_key_ids: tuple[str, ...] = setting(
        (), help="Key ids whose bundles are refused even when their key is trusted."
    )
    rollout_public_keys: tuple[Path, ...] = setting(
        (),
        help="Keys rollout records must be signed with; when set, unsigned records and "
        "downgrades below the version floor without a signed rollback are refused.",
    )
    stream_max_per_session: int = setting(
        4, min=1, max=10_000, help="WebSocket streams open per session."
    )
    stream_queue: int = setting(8, min=1, max=100_000, help="Pushes queued per WebSocket stream.")
    stream_max: int = setting(
        10_000, min=1, max=1_000_000, help="WebSocket streams open at once on this edge."
    )
    stream_max_per_address: int = setting(
        64, min=1, max=1_000_000, help="WebSocket streams open at once from one client address."
    )
    connections_per_address: int = setting(
        256,
        min=1,
        max=1_000_000,
        help="Open connections from one peer address (behind a CDN, raise it to what one "
        "CDN hop may hold).",
    )
    header_timeout_s: float = setting(
        10.0,
        min=0,
        min_open=True,
        max=600.0,
        duration=True,
        help="Time a connection has to send a request's headers before it is closed.",
    )
    body_timeout_s: float = setting(
        30.0,
        min=0,
        min_open=True,
        max=3600.0,
        duration=True,
        help="Time a request body may take in all before 408.",
    )
    body_min_rate: int = setting(
        1024,
        min=1,
        max=1 << 30,
        help="Bytes per second a request body must keep up after the grace period, or 408.",
    )
    body_rate_grace_s: float = setting(
        2.0,
        min=0,
        max=600.0,
        duration=True,
        help="Time before the minimum body rate is enforced.",
    )
    redis_timeout_s: float = setting(
        0.05,
        min=0,
        min_open=True,
        max=60.0,
        duration=True,
        help="Socket timeout of every Redis call (connect, read, write).",
    )
    redis_breaker_failures: int = setting(
        3, min=1, max=1_000_000, help="Redis failures in a row before the breaker opens."
    )
    redis_breaker_cooldown_s: float = setting(
        2.0,
        min=0,
        min_open=True,
        max=3600.0,
        duration=True,
        help="Time the Redis breaker stays open before one call probes Redis again.",
    )
    redis_feed_ping_s: float = setting(
        1.0,
        min=0,
        min_open=True,
        max=3600.0,
        duration=True,
        help="How often the session invalidation feed pings Redis; two missed answers drop it.",
    )
    log_level: LogLevel = setting("info", help="Log level.")
    access_log: bool = setting(False, help="Log every request.")
    storefront_dir: Path | None = setting(
        None,
        help="Serve the demo storefront (devtools/storefront) at /demo/ from this directory; "
        "off when unset.",
    )
    shutdown_timeout_s: float = setting(
        10.0,
        min=0,
        min_open=True,
        max=3600.0,
        duration=True,
        help="Time to finish requests at shutdown.",
    )
    telemetry_interval_s: float = setting(
        5.0,
        min=0,
        min_open=True,
        max=3600.0,
        duration=True,
        help="How often node status goes to telemetry.<region>.<node>.",
    )
    shadow_sample: float = setting(
        1.0, min=0, max=1, help="Share of requests a shadow canary is scored on."
    )
    catalog_max_items: int = setting(
        1_000_000,
        min=1,
        max=100_000_000,
        help="Catalog items whose details the edge holds (with --nats).",
    )
    explore_every: int = setting(
        20,
        min=0,
        max=1000,
        help="At most one slot in this many goes to a new item without interactions (0: none).",
    )
    holdout_percent: float = setting(
        0.0,
        min=0,
        max=50,
        help="Share of sessions (percent) answered without personalisation, for lift.",
    )
    explore_rate: float = setting(
        0.0,
        min=0,
        max=0.5,
        help="Chance each exploring tail slot shows an item from just below the answer.",
    )
    explore_slots: int = setting(2, min=1, max=10, help="Tail slots that may explore.")
    explore_pool: int = setting(
        20, min=1, max=500, help="Ranked items below the answer that exploration draws from."
    )
    log_answers: bool = setting(
        True, help="Write a served record of every answer into the event stream (attribution)."
    )
    answer_log_max_pending: int = setting(
        10_000, min=1, max=1_000_000, help="Served records buffered before new ones are dropped."
    )
    user_history_items: int = setting(
        50, min=1, max=1000, help="Recent items kept per returning user (in Redis)."
    )
    user_history_ttl_s: float = setting(
        30 * 86_400.0,
        min=60,
        max=366 * 86_400.0,
        duration=True,
        help="How long a user's recent items are kept.",
    )

    def __post_init__(self) -> None:
        for name in ("region", "node"):
            try:
                check_token(getattr(self, name), name)
            except ProtocolError as exc:
                raise SettingsError(exc.message, field=name) from exc
        check_ranges(self)
        self.nats_settings()  # the NATS settings go together (user and password, cert and key)
        self._check_redis()

    def nats_settings(self) -> NatsSettings | None:
        if self.nats_url is None:
            return None
        return self.nats_connection(self.nats_url, name=f"proxima-edge-{self.region}-{self.node}")

    def _check_redis(self) -> None:
        if self.redis_password is not None and self.redis_password_file is not None:
            raise SettingsError(
                "give redis_password or redis_password_file, not both", field="redis_password"
            )
        if self.redis_tls_key is not None and self.redis_tls_cert is None:
            raise SettingsError("redis_tls_key needs redis_tls_cert", field="redis_tls_key")
        tls = (self.redis_tls_ca, self.redis_tls_cert)
        if any(p is not None for p in tls) and not (self.redis or "").startswith("rediss://"):
            raise SettingsError("redis_tls_* settings need a rediss:// URL", field="redis_tls_ca")

    def redis_options(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.asyncio.from_url(self.redis, ...)``: the ACL user,
        its password (read from its file now) and the TLS files."""
        options: dict[str, Any] = {}
        if self.redis_username is not None:
            options["username"] = self.redis_username
        password = self.redis_password
        if self.redis_password_file is not None:
            try:
                password = read_secret(self.redis_password_file, "redis_password_file")
            except ProtocolError as exc:
                raise SettingsError(exc.message, field="redis_password_file") from exc
        if password is not None:
            options["password"] = password
        if (self.redis or "").startswith("rediss://"):
            options["ssl_cert_reqs"] = "required"
            options["ssl_check_hostname"] = True
            if self.redis_tls_ca is not None:
                options["ssl_ca_certs"] = str(self.redis_tls_ca)
            if self.redis_tls_cert is not None:
                options["ssl_certfile"] = str(self.redis_tls_cert)
                options["ssl_keyfile"] = str(self.redis_tls_key or self.redis_tls_cert)
        return options

    @classmethod
    def load(
        cls,
        *,
        file: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> EdgeSettings:
        """The ``[edge]`` table of ``file`` < ``env`` < ``overrides`` (None values skipped)."""
        return load_settings(cls, table="edge", file=file, env=env, overrides=overrides)
