"""Atomic file writes: a reader, or the file system after a crash, sees the old file or the
whole new one.

:func:`atomic_write_bytes` writes a temporary file in the same directory, named
``.<name>.<16 hex digits>.tmp`` (so :func:`remove_temporaries` can find what a crash left),
fsyncs it, moves it into place with :func:`os.replace` and fsyncs the directory, which makes
the new name itself durable. A failure removes the temporary and leaves the old file alone.

Blocking file I/O; call it from a worker thread in async code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from pathlib import Path
from typing import Final

TEMP_GLOB: Final = ".*.tmp"

# What fsync of a directory fails with on file systems that cannot sync one (PostgreSQL
# ignores the same): there is nothing more to make durable there, so it is not an error.
_CANNOT_SYNC_DIRECTORIES: Final = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write_bytes(
    path: Path,
    data: bytes,
    *,
    mode: int | None = None,
    exclusive: bool = False,
    mtime_ns: int | None = None,
    sync_directory: bool = True,
) -> None:
    """Replaces ``path`` with ``data``, durably once this returns.

    ``mode``: the file's permission bits exactly (the umask does not apply); the file never
    has wider ones. Without it, a new file's as :func:`open` would make it.
    ``exclusive``: raise :class:`FileExistsError` instead of replacing an existing ``path``.
    ``mtime_ns``: the file's modification time, set before it takes its name.
    ``sync_directory``: false skips the directory's fsync, for a caller to whom the old
    file after a crash is as good as the new (it saves an fsync); the content is still
    whole either way.
    Raises :class:`OSError` from the step that failed.
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, _NEW_FILE, 0o666 if mode is None else mode)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if mtime_ns is not None:
            os.utime(temp, ns=(mtime_ns, mtime_ns))
        if exclusive:
            os.link(temp, path)  # unlike a rename, fails when ``path`` exists
            os.unlink(temp)
        else:
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if sync_directory:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Makes the names created, renamed or removed in ``directory`` survive a crash.

    Raises :class:`OSError`, except on a file system that cannot sync a directory.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _CANNOT_SYNC_DIRECTORIES:
            raise
    finally:
        os.close(fd)


def remove_temporaries(directory: Path, *, older_than_s: float | None = None) -> int:
    """Removes the temporaries interrupted writes left in ``directory``; returns how many.

    With ``older_than_s``, only those unmodified for that long, so that a write another
    process has under way is left alone; without it, the caller knows there is none.
    """
    cutoff = None if older_than_s is None else time.time() - older_than_s
    removed = 0
    for temp in directory.glob(TEMP_GLOB):
        try:
            if cutoff is None or temp.stat().st_mtime < cutoff:
                temp.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # removed by someone else meanwhile
    return removed
