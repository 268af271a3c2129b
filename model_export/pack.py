"""Packing a trained model's parts into a signed bundle file for the edges."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from protocol.bundle import build_bundle
from protocol.keys import load_private_key
from runtime.files import atomic_write_bytes

BUNDLE_FILE_MODE: Final = 0o644


def pack_bundle(
    parts: Mapping[str, bytes],
    *,
    version: int,
    ranker: Mapping[str, Any],
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    training: Mapping[str, Any],
    rules_version: str | None,
    feature_schema_version: int,
    private_key_pem: bytes,
    created_at: datetime | None = None,
) -> bytes:
    """Signs ``parts`` and their manifest with the PEM private key; returns the bundle."""
    return build_bundle(
        version=version,
        feature_schema_version=feature_schema_version,
        ranker=ranker,
        metrics=metrics,
        rules_version=rules_version,
        config=config,
        training=training,
        parts=parts,
        private_key=load_private_key(private_key_pem),
        created_at=created_at,
    )


def write_bundle_file(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` (mode 0644) so readers see the old file or the whole new one.

    A failure leaves ``path`` untouched and no temporary.
    """
    atomic_write_bytes(path, data, mode=BUNDLE_FILE_MODE)
