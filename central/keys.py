"""Writing a new signing key pair to disk; :mod:`protocol.keys` makes, parses and names keys."""

from __future__ import annotations

from pathlib import Path

from protocol.errors import KeyFileError
from protocol.keys import PRIVATE_KEY_FILENAME, PUBLIC_KEY_FILENAME, generate_keypair
from runtime.files import atomic_write_bytes


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
