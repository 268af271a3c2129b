from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.files import atomic_write_bytes, fsync_directory, remove_temporaries


@pytest.fixture
def umask_077() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_a_new_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b'{"a": 1}')
    assert target.read_bytes() == b'{"a": 1}'
    assert names(tmp_path) == ["state.json"]


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old and longer than the new content")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert names(tmp_path) == ["state.json"]


def test_writes_large_data_whole(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    atomic_write_bytes(tmp_path / "blob", data)
    assert (tmp_path / "blob").read_bytes() == data


def test_mode_is_exact_whatever_the_umask(tmp_path: Path, umask_077: None) -> None:
    atomic_write_bytes(tmp_path / "public", b"p", mode=0o644)
    atomic_write_bytes(tmp_path / "private", b"k", mode=0o600)
    assert mode_of(tmp_path / "public") == 0o644
    assert mode_of(tmp_path / "private") == 0o600


def test_without_a_mode_a_new_file_follows_the_umask(tmp_path: Path, umask_077: None) -> None:
    atomic_write_bytes(tmp_path / "plain", b"x")
    assert mode_of(tmp_path / "plain") == 0o600


def test_a_replaced_file_takes_the_new_mode(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_bytes(b"old")
    target.chmod(0o666)
    atomic_write_bytes(target, b"new", mode=0o600)
    assert mode_of(target) == 0o600


def test_exclusive_creates_a_missing_file(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "key", b"secret", mode=0o600, exclusive=True)
    assert (tmp_path / "key").read_bytes() == b"secret"
    assert names(tmp_path) == ["key"]


def test_exclusive_refuses_an_existing_file_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert names(tmp_path) == ["key"]


def test_a_failed_write_keeps_the_old_content_and_no_temporary(tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "inside").write_bytes(b"kept")
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(occupied, b"cannot replace a directory")
    assert (occupied / "inside").read_bytes() == b"kept"
    assert names(tmp_path) == ["occupied"]


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "absent" / "file", b"x")


def test_the_modification_time_is_set_before_the_file_takes_its_name(tmp_path: Path) -> None:
    when_ns = 1_700_000_000_123_456_789
    atomic_write_bytes(tmp_path / "bundle", b"b", mtime_ns=when_ns)
    assert (tmp_path / "bundle").stat().st_mtime_ns == when_ns


def test_the_directory_fsync_may_be_skipped(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "cursor", b"c", sync_directory=False)
    assert (tmp_path / "cursor").read_bytes() == b"c"


def test_fsync_directory_accepts_only_directories(tmp_path: Path) -> None:
    fsync_directory(tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_directory(tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        fsync_directory(tmp_path / "absent")


def test_remove_temporaries_removes_only_temporaries(tmp_path: Path) -> None:
    (tmp_path / ".state.json.0123456789abcdef.tmp").write_bytes(b"torn")
    (tmp_path / ".other.tmp").write_bytes(b"torn")
    (tmp_path / "state.json").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_bytes(b"not hidden: not ours")
    assert remove_temporaries(tmp_path) == 2
    assert names(tmp_path) == ["notes.tmp", "state.json"]


def test_remove_temporaries_can_spare_recent_ones(tmp_path: Path) -> None:
    old, recent = tmp_path / ".old.a.tmp", tmp_path / ".recent.b.tmp"
    old.write_bytes(b"")
    recent.write_bytes(b"")
    two_hours_ago = os.stat(old).st_mtime - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert remove_temporaries(tmp_path, older_than_s=3600) == 1
    assert names(tmp_path) == [".recent.b.tmp"]
