"""``write_keypair``: a new key pair on disk, the private half readable by its owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.keys import write_keypair
from protocol.errors import KeyFileError
from protocol.keys import (
    PRIVATE_KEY_FILENAME,
    PUBLIC_KEY_FILENAME,
    key_id,
    load_private_key,
    load_public_key,
)


def test_write_keypair_creates_private_key_with_mode_0600(tmp_path: Path) -> None:
    private_path, public_path = write_keypair(tmp_path)
    assert private_path == tmp_path / PRIVATE_KEY_FILENAME
    assert public_path == tmp_path / PUBLIC_KEY_FILENAME
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    private_key = load_private_key(private_path.read_bytes())
    public_key = load_public_key(public_path.read_bytes())
    assert key_id(private_key.public_key()) == key_id(public_key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.key", "signing.pub"]


def test_write_keypair_creates_missing_directory(tmp_path: Path) -> None:
    private_path, _ = write_keypair(tmp_path / "keys" / "trainer")
    assert private_path.is_file()


def test_write_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    private_path, public_path = write_keypair(tmp_path)
    before = (private_path.read_bytes(), public_path.read_bytes())
    with pytest.raises(KeyFileError) as caught:
        write_keypair(tmp_path)
    assert caught.value.code == "key_exists"
    assert (private_path.read_bytes(), public_path.read_bytes()) == before


def test_write_keypair_refuses_when_only_public_key_exists(tmp_path: Path) -> None:
    (tmp_path / PUBLIC_KEY_FILENAME).write_bytes(b"someone else's key")
    with pytest.raises(KeyFileError) as caught:
        write_keypair(tmp_path)
    assert caught.value.code == "key_exists"
    assert not (tmp_path / PRIVATE_KEY_FILENAME).exists()


def test_write_keypair_overwrites_when_asked(tmp_path: Path) -> None:
    private_path, _ = write_keypair(tmp_path)
    old_private = private_path.read_bytes()
    private_path, public_path = write_keypair(tmp_path, overwrite=True)
    assert private_path.read_bytes() != old_private
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert key_id(load_private_key(private_path.read_bytes()).public_key()) == key_id(
        load_public_key(public_path.read_bytes())
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.key", "signing.pub"]


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_private_key_is_0600_whatever_the_umask(
    tmp_path: Path, permissive_umask: None
) -> None:
    private_path, public_path = write_keypair(tmp_path)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
