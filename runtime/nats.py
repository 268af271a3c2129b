"""How to reach NATS: typed connection settings turned into nats-py ``connect`` options.

Pure data: callers do the connecting. Nothing assumes one server: ``servers`` is a list
(a region's leaf node in production, a cluster's seeds centrally).
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import ProtocolError
from runtime.settings import setting

MAX_CONNECT_TIMEOUT_S = 60.0
MAX_RECONNECT_WAIT_S = 60.0


class BusSettingsError(ProtocolError):
    code = "bad_bus_settings"


@dataclass(frozen=True, slots=True)
class NatsSettings:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str = "proxima"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    credentials: Path | None = None  # a .creds file (JWT + nkey seed)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout_s: float = 2.0
    reconnect_wait_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.servers:
            raise BusSettingsError("at least one NATS server URL is needed", field="servers")
        for url in self.servers:
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise BusSettingsError(f"not a NATS URL: {url!r}", field="servers")
        if (self.user is None) != (self.password is None):
            raise BusSettingsError("user and password go together", field="user")
        methods = sum(x is not None for x in (self.user, self.token, self.credentials))
        if methods > 1:
            raise BusSettingsError(
                "choose one of user/password, token or credentials", field="auth"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BusSettingsError("tls_cert and tls_key go together", field="tls_cert")
        for name, value, high in (
            ("connect_timeout_s", self.connect_timeout_s, MAX_CONNECT_TIMEOUT_S),
            ("reconnect_wait_s", self.reconnect_wait_s, MAX_RECONNECT_WAIT_S),
        ):
            if not (math.isfinite(value) and 0 < value <= high):
                raise BusSettingsError(f"{name} must be above 0 and at most {high:g}", field=name)

    @classmethod
    def from_url(cls, url: str, **extra: Any) -> NatsSettings:
        """Comma-separated URLs, as ``--nats`` and ``PROXIMA_NATS_URL`` take them."""
        servers = tuple(u.strip() for u in url.split(",") if u.strip())
        return cls(servers=servers, **extra)

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "servers": list(self.servers),
            "name": self.name,
            "connect_timeout": self.connect_timeout_s,
            "reconnect_time_wait": self.reconnect_wait_s,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
        }
        if self.user is not None:
            options["user"], options["password"] = self.user, self.password
        if self.token is not None:
            options["token"] = self.token
        if self.credentials is not None:
            options["user_credentials"] = str(self.credentials)
        if self.tls_ca is not None or self.tls_cert is not None:
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
            if self.tls_cert is not None and self.tls_key is not None:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            options["tls"] = context
        return options


def nats_url_setting(help_suffix: str = "") -> Any:
    """The ``--nats`` field of every service's settings, declared once."""
    return setting(
        "nats://127.0.0.1:4222",
        flag="--nats",
        help=f"NATS server URL(s), comma-separated{help_suffix}.",
    )
