"""Signing key pairs on disk: writing a new one, rotating it, naming keys by their id.

:mod:`protocol.keys` makes, parses and names keys. A rotation keeps the retired pair beside
the new one as ``signing-<key id>.key`` / ``.pub``: edges go on trusting the old public key
(``trusted_public_keys``) until no bundle they may be asked for is signed by it, and then
revoke it (``revoked_key_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.errors import KeyFileError, ProtocolError
from protocol.keys import (
    PRIVATE_KEY_FILENAME,
    PUBLIC_KEY_FILENAME,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    public_key_to_pem,
)
from runtime.files import atomic_write_bytes


@dataclass(frozen=True, slots=True)
class Rotation:
    old_id: str
    new_id: str
    private: Path  # the new signing.key
    public: Path  # the new signing.pub
    retired_private: Path  # signing-<old id>.key
    retired_public: Path  # signing-<old id>.pub


def write_keypair(out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Writes a new ``signing.key`` (mode 0600) and ``signing.pub`` into ``out_dir``.

    Refuses, before writing anything, when either file exists and ``overwrite`` is false.
    Neither file ever exists under its name with wider permissions or partial content.
    Returns ``(private_path, public_path)``.
    """
    private_path = out_dir / PRIVATE_KEY_FILENAME
    public_path = out_dir / PUBLIC_KEY_FILENAME
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists() or path.is_symlink():
                raise _exists(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = generate_keypair()
    _write(private_path, private_pem, mode=0o600, overwrite=overwrite)
    try:
        _write(public_path, public_pem, mode=0o644, overwrite=overwrite)
    except BaseException:
        # A private key without its public half would only confuse the next attempt.
        if not overwrite:
            private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _write(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    try:
        atomic_write_bytes(path, data, mode=mode, exclusive=not overwrite)
    except FileExistsError as exc:  # created by someone else since the check above
        raise _exists(path) from exc


def _exists(path: Path) -> KeyFileError:
    return KeyFileError(f"{path} already exists; refusing to overwrite it", code="key_exists")


def rotate_keypair(directory: Path) -> Rotation:
    """Replaces the pair in ``directory`` with a new one, keeping the old as
    ``signing-<old id>.key`` / ``.pub``.

    The retired copies are written before the new pair replaces the current one, so at every
    moment the old private key exists under one name or the other.
    """
    private_path = directory / PRIVATE_KEY_FILENAME
    public_path = directory / PUBLIC_KEY_FILENAME
    try:
        old_private_pem = private_path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read {private_path}: {exc.strerror}; generate a pair first",
            code="key_missing",
        ) from exc
    old_key = load_private_key(old_private_pem)
    old_id = key_id(old_key.public_key())
    retired_private = directory / f"signing-{old_id}.key"
    retired_public = directory / f"signing-{old_id}.pub"
    for path, data, mode in (
        (retired_private, old_private_pem, 0o600),
        (retired_public, public_key_to_pem(old_key.public_key()), 0o644),
    ):
        if path.exists() and path.read_bytes() == data:
            continue  # kept by an earlier rotation that stopped half way
        _write(path, data, mode=mode, overwrite=False)
    new_private_pem, new_public_pem = generate_keypair()
    _write(private_path, new_private_pem, mode=0o600, overwrite=True)
    _write(public_path, new_public_pem, mode=0o644, overwrite=True)
    new_id = key_id(load_public_key(new_public_pem))
    return Rotation(old_id, new_id, private_path, public_path, retired_private, retired_public)


def key_id_of_file(path: Path) -> str:
    """The key id of a PEM public or private key file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}", code="key_missing") from exc
    try:
        if b"PRIVATE KEY-----" in data:
            return key_id(load_private_key(data).public_key())
        return key_id(load_public_key(data))
    except ProtocolError as exc:
        raise KeyFileError(f"{path}: {exc.message}", code=exc.code) from exc


def keys_in(directory: Path) -> list[tuple[str, Path]]:
    """``(key id, path)`` of every public key file in ``directory``, sorted by name."""
    return [(key_id_of_file(path), path) for path in sorted(directory.glob("*.pub"))]

