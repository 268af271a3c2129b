"""Settings of the central catalog service (``proxima catalog serve`` and ``central run``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.nats import NatsSettings, nats_url_setting
from runtime.settings import SettingsError, check_ranges, load_settings, setting

DEFAULT_CATALOG_PORT = 8091


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogSettings:
    nats_url: str = nats_url_setting(": the catalog bucket lives there")
    catalog_host: str = setting("127.0.0.1", help="Address the catalog API listens on.")
    catalog_port: int = setting(
        DEFAULT_CATALOG_PORT, min=0, max=65535, help="Port of the catalog API (0: any free one)."
    )
    catalog_token: str | None = setting(
        None, cli=False, secret=True, help="Bearer token the catalog API asks for."
    )
    catalog_token_file: Path | None = setting(
        None, help="File holding the bearer token the catalog API asks for."
    )
    webhook_secret: str | None = setting(
        None, cli=False, secret=True, help="Shared secret of the signed catalog webhook."
    )
    webhook_secret_file: Path | None = setting(
        None, help="File holding the shared secret of the signed catalog webhook."
    )
    webhook_tolerance_s: float = setting(
        300.0, min=1.0, max=3600.0, duration=True,
        help="How far a webhook's timestamp may be from now.",
    )  # fmt: skip
    catalog_max_body_bytes: int = setting(
        10 * 1024 * 1024, min=1024, max=1 << 30, help="Largest catalog request body accepted."
    )

    def __post_init__(self) -> None:
        check_ranges(self)

    def nats_settings(self) -> NatsSettings:
        return NatsSettings.from_url(self.nats_url, name="proxima-catalog")

    def token(self) -> str:
        return _secret(self.catalog_token, self.catalog_token_file, "catalog_token")

    def webhook_key(self) -> bytes | None:
        if self.webhook_secret is None and self.webhook_secret_file is None:
            return None
        return _secret(self.webhook_secret, self.webhook_secret_file, "webhook_secret").encode()

    @classmethod
    def load(
        cls, *, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> CatalogSettings:
        return load_settings(cls, table="catalog", env=env, overrides=overrides)


def _secret(value: str | None, path: Path | None, name: str) -> str:
    if path is not None:
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise SettingsError(
                f"cannot read {name} file {path}: {exc.strerror}", field=name
            ) from exc
    if not value or len(value) < 16:
        raise SettingsError(
            f"{name} must be set (PROXIMA_{name.upper()} or --{name.replace('_', '-')}-file) "
            "and hold at least 16 characters",
            field=name,
        )
    return value


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
