"""The keys an edge trusts: for bundles (several, for rotation) and for rollout records.

Read once at start from the settings' files; a file that cannot be read or parsed, or a
malformed revoked key id, is a :class:`SettingsError` naming the setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edge_node.config import EdgeSettings
from edge_node.errors import SettingsError
from protocol.errors import ProtocolError
from protocol.keys import TrustedKeys, load_public_key


def bundle_keys(settings: EdgeSettings) -> TrustedKeys:
    """``public_key`` and ``trusted_public_keys``, less ``revoked_key_ids``."""
    paths = (settings.public_key, *settings.trusted_public_keys)
    return _trusted(paths, settings.revoked_key_ids, "public_key")


def rollout_keys(settings: EdgeSettings) -> TrustedKeys | None:
    """The keys rollout records must be signed with; None when records need no signature."""
    if not settings.rollout_public_keys:
        return None
    return _trusted(settings.rollout_public_keys, settings.revoked_key_ids, "rollout_public_keys")


def _trusted(paths: Iterable[Path], revoked: Iterable[str], field: str) -> TrustedKeys:
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as exc:
            message = f"cannot read public key {path}: {exc.strerror}"
            raise SettingsError(message, field=field) from exc
        except ProtocolError as exc:
            raise SettingsError(f"public key {path}: {exc.message}", field=field) from exc
    try:
        return TrustedKeys.of(keys, revoked)
    except ProtocolError as exc:
        raise SettingsError(exc.message, field="revoked_key_ids") from exc
