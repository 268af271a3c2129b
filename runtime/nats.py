"""How to reach NATS: typed connection settings turned into nats-py ``connect`` options.

Pure data: callers do the connecting. Nothing assumes one server: ``servers`` is a list
(a region's leaf node in production, a cluster's seeds centrally).

:class:`NatsClientSettings` declares, once, the credential and TLS settings every process
shares (the edge's settings inherit them; the central commands get them as flags and
``PROXIMA_NATS_*`` variables): a ``.creds`` file, a token or a user with its password, each
secret readable from a file so it need not sit in a URL, the environment or a flag; a CA
the server's certificate is checked against; a client certificate. Secret files are read
when connecting, so a rotated secret is picked up on the next connection.
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from protocol.errors import ProtocolError
from runtime.settings import SettingsError, setting

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
    password_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
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
        if self.password is not None and self.password_file is not None:
            raise BusSettingsError("give the password or its file, not both", field="password")
        if self.token is not None and self.token_file is not None:
            raise BusSettingsError("give the token or its file, not both", field="token")
        has_password = self.password is not None or self.password_file is not None
        if (self.user is None) != (not has_password):
            raise BusSettingsError("user and password go together", field="user")
        has_token = self.token is not None or self.token_file is not None
        methods = sum(x for x in (self.user is not None, has_token, self.credentials is not None))
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
            password = self.password
            if self.password_file is not None:
                password = read_secret(self.password_file, "password_file")
            options["user"], options["password"] = self.user, password
        if self.token is not None:
            options["token"] = self.token
        if self.token_file is not None:
            options["token"] = read_secret(self.token_file, "token_file")
        if self.credentials is not None:
            options["user_credentials"] = str(self.credentials)
        if self.tls_ca is not None or self.tls_cert is not None:
            options["tls"] = client_tls_context(self.tls_ca, self.tls_cert, self.tls_key)
        return options


def read_secret(path: Path, what: str) -> str:
    """A secret kept in a file (a mounted Secret, say): its text without the line end."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BusSettingsError(f"cannot read the {what} {path}: {exc}", field=what) from exc
    if not secret:
        raise BusSettingsError(f"the {what} {path} is empty", field=what)
    return secret


def client_tls_context(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context that checks the server against ``ca`` (the system's CAs when None)
    and its host name, and presents ``cert`` when given."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        if cert is not None:
            context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise BusSettingsError(f"cannot load the TLS files: {exc}", field="tls") from exc
    return context


def nats_url_setting(help_suffix: str = "") -> Any:
    """The ``--nats`` field of every service's settings, declared once."""
    return setting(
        "nats://127.0.0.1:4222",
        flag="--nats",
        help=f"NATS server URL(s), comma-separated{help_suffix}.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsClientSettings:
    """Credentials and TLS for NATS, the same fields for the edge and every central role.

    Settings classes inherit these fields (``EdgeSettings``); a command without one gets
    them through :func:`runtime.settings.settings_options` and :func:`load_settings`.
    """

    nats_user: str | None = setting(None, help="NATS user name (with a password or its file).")
    nats_password: str | None = setting(
        None, cli=False, secret=True, help="NATS password (file or environment only)."
    )
    nats_password_file: Path | None = setting(
        None, help="File holding the NATS password (a mounted secret, say)."
    )
    nats_token: str | None = setting(
        None, cli=False, secret=True, help="NATS token (file or environment only)."
    )
    nats_token_file: Path | None = setting(None, help="File holding the NATS token.")
    nats_credentials: Path | None = setting(
        None, help="NATS credentials file (.creds: a user JWT and its nkey seed)."
    )
    nats_tls_ca: Path | None = setting(
        None,
        help="CA certificate the NATS server is checked against (host name too); the "
        "system's CAs are used for tls:// URLs without it.",
    )
    nats_tls_cert: Path | None = setting(None, help="Client certificate for NATS (with the key).")
    nats_tls_key: Path | None = setting(None, help="Client key for NATS (with the certificate).")

    def nats_connection(self, url: str, *, name: str) -> NatsSettings:
        """The connection settings of ``url`` (comma-separated) with these credentials."""
        try:
            return NatsSettings.from_url(
                url,
                name=name,
                user=self.nats_user,
                password=self.nats_password,
                password_file=self.nats_password_file,
                token=self.nats_token,
                token_file=self.nats_token_file,
                credentials=self.nats_credentials,
                tls_ca=self.nats_tls_ca,
                tls_cert=self.nats_tls_cert,
                tls_key=self.nats_tls_key,
            )
        except ProtocolError as exc:
            raise SettingsError(exc.message, field="nats_url") from exc


NO_NATS_CREDENTIALS: Final = NatsClientSettings()
"""No credentials, no TLS: for tests and local servers."""
