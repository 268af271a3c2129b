"""Packing a trained model's parts into a signed bundle file for the edges."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from protocol.bundle import build_bundle
from protocol.keys import load_private_key

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
    """Writes ``data`` to ``path`` so readers see the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    file is renamed over ``path``; a failure leaves ``path`` untouched and no temporary.
    """
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), BUNDLE_FILE_MODE)  # mkstemp creates files as 0600
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable; some filesystems cannot, which is not an error."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
