"""Ed25519 signing keys for model bundles: make them, load them, name them.

The trainer holds the private key (``signing.key``); edges hold only the public key
(``signing.pub``). The loaders take bytes, since callers read the files, and raise
:class:`~protocol.errors.KeyFileError` saying what is wrong with what they were given.
Writing key files is :func:`central.keys.write_keypair`'s: this module does no file I/O.

Keys are named by their :func:`key_id`, which every bundle manifest (and every signed
rollout record) carries. An edge trusts a :class:`TrustedKeys` set: several public keys at
once, so a new signing key can be rolled out before the trainer signs with it, and a list
of revoked key ids whose signatures are refused even while their key is still listed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from protocol.errors import KeyFileError

PRIVATE_KEY_FILENAME: Final = "signing.key"
PUBLIC_KEY_FILENAME: Final = "signing.pub"
KEY_ID_HEX_CHARS: Final = 16

_PEM_BEGIN: Final = b"-----BEGIN "
_PEM_END: Final = b"-----END "


def generate_keypair() -> tuple[bytes, bytes]:
    """A new key pair as ``(private_pem, public_pem)``: PKCS8 and SubjectPublicKeyInfo."""
    private_key = Ed25519PrivateKey.generate()
    return private_key_to_pem(private_key), public_key_to_pem(private_key.public_key())


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def public_key_to_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of the sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys signatures may verify against, by key id, and the revoked key ids."""

    keys: Mapping[str, Ed25519PublicKey]
    revoked: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls, public_keys: Iterable[Ed25519PublicKey], revoked: Iterable[str] = ()
    ) -> TrustedKeys:
        keys = {key_id(key): key for key in public_keys}
        if not keys:
            raise KeyFileError("at least one trusted public key is needed", code="no_keys")
        revoked_ids = frozenset(revoked)
        for kid in revoked_ids:
            if not is_key_id(kid):
                raise KeyFileError(
                    f"revoked key id {kid[:40]!r} is not 16 lowercase hex characters",
                    code="bad_key_id",
                )
        return cls(keys, revoked_ids)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The trusted, unrevoked key of ``kid``, if there is one."""
        return None if kid in self.revoked else self.keys.get(kid)

    def describe(self) -> str:
        return ", ".join(sorted(k for k in self.keys if k not in self.revoked)) or "none"


def is_key_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == KEY_ID_HEX_CHARS
        and all(c in "0123456789abcdef" for c in value)
    )


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """Parses an unencrypted PEM Ed25519 private key."""
    _require_pem(data, "private key")
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(
            f"this is a public key; signing needs the private key ({PRIVATE_KEY_FILENAME})",
            code="wrong_key_kind",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # raised when the key is encrypted and no password was given
        raise KeyFileError(
            "the private key is encrypted; an unencrypted PKCS8 key is needed",
            code="key_encrypted",
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            f"the private key could not be parsed: {exc}", code="key_unreadable"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"expected an Ed25519 private key, found {_key_kind(key)}", code="not_ed25519"
        )
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """Parses a PEM (SubjectPublicKeyInfo) Ed25519 public key."""
    _require_pem(data, "public key")
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(
            f"this is a private key; edges must be given only the public key "
            f"({PUBLIC_KEY_FILENAME})",
            code="wrong_key_kind",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            f"the public key could not be parsed: {exc}", code="key_unreadable"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"expected an Ed25519 public key, found {_key_kind(key)}", code="not_ed25519"
        )
    return key


def _require_pem(data: bytes, what: str) -> None:
    if not isinstance(data, bytes | bytearray):
        raise KeyFileError(f"the {what} must be given as bytes", code="not_pem")
    text = bytes(data).strip()
    if not text:
        raise KeyFileError(f"the {what} file is empty", code="not_pem")
    if not text.startswith(_PEM_BEGIN):
        raise KeyFileError(
            f"the {what} is not PEM (expected a '-----BEGIN ...' line)", code="not_pem"
        )
    if _PEM_END not in text:
        raise KeyFileError(
            f"the {what} is truncated (no '-----END ...' line)", code="key_truncated"
        )


def _key_kind(key: object) -> str:
    name = type(key).__name__
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    return f"a {name} key"
