"""Typed edge settings, from a TOML file, ``PROXIMA_*`` environment variables and flags.

Later sources win: file < environment < flags. An unknown key in the file or among the
flags is an error (a typo in a setting must not silently fall back to a default);
``PROXIMA_*`` variables that name no edge setting are left alone, since other commands
(the trainer's ``PROXIMA_SIGNING_KEY``, say) share the prefix. The environment is only
read by the entry point, which passes it in; nothing here looks at ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from edge_node.errors import SettingsError
from edge_node.uplink.uplink import FsyncPolicy
from runtime.nats import NatsSettings
from protocol.errors import ProtocolError
from protocol.subjects import check_token

ENV_PREFIX = "PROXIMA_"
LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    region: str
    node: str
    public_key: Path
    bundle: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    redis: str | None = None
    nats_url: str | None = None  # comma-separated URLs: events go up, bundles come down
    nats_user: str | None = None
    nats_password: str | None = field(default=None, repr=False)
    nats_token: str | None = field(default=None, repr=False)
    nats_credentials: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    bundle_cache_dir: Path = Path("./proxima-bundles")  # last good bundle, for starts without NATS
    publish_batch: int = 256  # events in flight to JetStream at once
    rules: Path | None = None
    spool_dir: Path = Path("./proxima-spool")
    spool_max_bytes: int = 1 << 30
    spool_fsync: FsyncPolicy = "interval"
    spool_fsync_interval_s: float = 0.05
    uplink_max_pending_events: int = 10_000
    sessions_max: int = 200_000
    sessions_max_bytes: int = 256 << 20
    rank_cache_sessions: int = 4096  # candidates + feature rows of recently ranked windows
    max_body_bytes: int = 512 * 1024
    default_k: int = 20
    max_concurrency: int = 512
    session_rate: float = 20.0  # events+requests per second per session
    session_burst: int = 60
    ip_rate: float = 500.0
    ip_burst: int = 1000
    rate_limit_keys: int = 100_000  # buckets tracked before the oldest are forgotten
    cors_origins: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    stream_max_per_session: int = 4
    stream_queue: int = 8
    log_level: LogLevel = "info"
    access_log: bool = False
    demo_page: bool = True  # GET /demo/: a storefront built on the proxima.js snippet
    shutdown_timeout_s: float = 10.0
    telemetry_interval_s: float = 5.0  # how often node status goes to telemetry.<region>.<node>
    shadow_sample: float = 1.0  # share of requests a shadow canary is scored on

    def __post_init__(self) -> None:
        for name in ("region", "node"):
            try:
                check_token(getattr(self, name), name)
            except ProtocolError as exc:
                raise SettingsError(exc.message, field=name) from exc
        positive = (
            "port",
            "spool_max_bytes",
            "uplink_max_pending_events",
            "sessions_max",
            "sessions_max_bytes",
            "rank_cache_sessions",
            "max_body_bytes",
            "default_k",
            "max_concurrency",
            "session_burst",
            "ip_burst",
            "rate_limit_keys",
            "stream_max_per_session",
            "stream_queue",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive", field=name)
        if not 0.0 <= self.shadow_sample <= 1.0:
            raise SettingsError("shadow_sample must be within 0..1", field="shadow_sample")
        for name in (
            "session_rate",
            "ip_rate",
            "spool_fsync_interval_s",
            "shutdown_timeout_s",
            "telemetry_interval_s",
        ):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be positive", field=name)
        if self.port > 65535:
            raise SettingsError("port must be 1-65535", field="port")
        if self.default_k > 100:
            raise SettingsError("default_k must be at most 100", field="default_k")

    def nats_settings(self) -> NatsSettings | None:
        if self.nats_url is None:
            return None
        try:
            return NatsSettings.from_url(
                self.nats_url,
                name=f"proxima-edge-{self.region}-{self.node}",
                user=self.nats_user,
                password=self.nats_password,
                token=self.nats_token,
                credentials=self.nats_credentials,
                tls_ca=self.nats_tls_ca,
                tls_cert=self.nats_tls_cert,
                tls_key=self.nats_tls_key,
            )
        except ProtocolError as exc:
            raise SettingsError(exc.message, field="nats_url") from exc

    @classmethod
    def load(
        cls,
        *,
        file: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> EdgeSettings:
        values: dict[str, Any] = {}
        if file is not None:
            values.update(_from_toml(file))
        if env is not None:
            values.update(_from_env(env))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        for required in ("region", "node", "public_key"):
            if required not in values:
                raise SettingsError(
                    f"{required} is required (flag --{required.replace('_', '-')}, "
                    f"env {ENV_PREFIX}{required.upper()} or the settings file)",
                    field=required,
                )
        return cls(**{name: _coerce(name, value) for name, value in values.items()})


_FIELDS = {f.name: f for f in dataclasses.fields(EdgeSettings)}
_HINTS = typing.get_type_hints(EdgeSettings)


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from exc
    section = data.get("edge", data)
    if not isinstance(section, dict):
        raise SettingsError(f"settings file {path}: [edge] must be a table")
    for key in section:
        if key not in _FIELDS:
            raise SettingsError(f"settings file {path}: unknown setting {key!r}", field=key)
    return dict(section)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in _FIELDS:
            values[name] = value
    return values


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise SettingsError(f"unknown setting {name!r}", field=name)
    hint = _HINTS[name]
    try:
        return _to_type(hint, value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name}: {exc}", field=name) from exc


def _to_type(hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None or value == "":
            return None
        return _to_type(options[0], value)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}, not {value!r}")
        return value
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise TypeError("must be a list")
        return tuple(str(i).strip() for i in items if str(i).strip())
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"must be an integer, not {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not {value!r}")
        return float(value)
    if hint is Path:
        if not isinstance(value, str | Path):
            raise TypeError("must be a path")
        return Path(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("must be a string")
        return value
    raise TypeError(f"unsupported setting type {hint}")
