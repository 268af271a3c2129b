"""Commits of several files at once: all of them visible, or none, also after a crash.

A commit writes its files into a staging directory first (``<root>/_staging/<owner>/<n>/
<date>/<name>``, fsynced), then writes its record ``COMMIT`` there atomically — the
commit point — then moves each file to its day directory and removes the files it
replaces, and finally deletes its staging directory. A crash before the record leaves
only staged files, which recovery deletes; a crash after it leaves a record that recovery
carries out to the end. So a writer's Kafka offsets (in the files' names) are in the lake
exactly when its rows are.

Each process stages under its own directory, held by an exclusive ``flock`` on
``<owner>.lock`` for as long as it lives: :func:`recover` touches only the directories
whose lock it can take, those of processes that are gone, so several writers may share a
lake. Blocking file I/O; call it from a worker thread in async code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from central.lake.errors import LakeCorruptError
from central.lake.layout import LakeLayout
from runtime.files import atomic_write_bytes, fsync_directory

RECORD: Final = "COMMIT"
_LOCK_SUFFIX: Final = ".lock"


def sync_file(path: Path) -> None:
    """Makes a file's content durable (its name needs the directory's fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class Commit:
    """One commit under way: stage files with :meth:`stage` or :meth:`path_for`, then
    :meth:`finish` (or :meth:`abandon`)."""

    layout: LakeLayout
    directory: Path
    parts: list[tuple[str, str]] = field(default_factory=list)  # (date, name)
    removes: list[Path] = field(default_factory=list)  # relative to the lake root
    recorded: bool = False  # past the commit point: it must be carried out, never dropped

    def path_for(self, date: str, name: str) -> Path:
        """Where to write a file that becomes ``<day date>/<name>``; fsync it before
        :meth:`finish` (:func:`sync_file`)."""
        self.parts.append((date, name))
        target = self.directory / date / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def stage(self, date: str, name: str, data: bytes) -> None:
        write_durably(self.path_for(date, name), data)

    def replace(self, path: Path) -> None:
        """``path`` (a committed data file) is removed once the staged files have names."""
        self.removes.append(path.relative_to(self.layout.root))

    def finish(self) -> None:
        for date in {date for date, _ in self.parts}:
            fsync_directory(self.directory / date)
        record = {
            "parts": [list(part) for part in self.parts],
            "removes": [str(path) for path in self.removes],
        }
        atomic_write_bytes(self.directory / RECORD, json.dumps(record).encode())
        self.recorded = True
        _carry_out(self.layout, self.directory)

    def abandon(self) -> None:
        """Drops a commit that has not reached its commit point (else recovery ends it)."""
        if not self.recorded:
            shutil.rmtree(self.directory, ignore_errors=True)


class Stager:
    """A process's staging directory, locked while it lives; hands out :class:`Commit`s."""

    def __init__(self, layout: LakeLayout) -> None:
        self.layout = layout
        layout.staging.mkdir(parents=True, exist_ok=True)
        owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_path = layout.staging / f"{owner}{_LOCK_SUFFIX}"
        self._lock_fd: int | None = os.open(
            self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.directory = layout.staging / owner
        self.directory.mkdir()
        self._next = 0

    def begin(self) -> Commit:
        self._next += 1
        directory = self.directory / str(self._next)
        directory.mkdir()
        return Commit(self.layout, directory)

    def close(self) -> None:
        """Releases the staging directory: commits past their commit point are carried
        out, the others dropped. When carrying one out fails, the directory stays for
        :func:`recover` to finish once this process is gone."""
        if self._lock_fd is None:
            return
        for commit in (p for p in self.directory.iterdir() if (p / RECORD).is_file()):
            try:
                _carry_out(self.layout, commit)
            except OSError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self._lock_path.unlink()
        os.close(self._lock_fd)
        self._lock_fd = None


@dataclass(frozen=True, slots=True)
class Recovery:
    completed: int  # commits past their commit point, carried out to the end
    dropped: int  # commits that had not reached it, deleted


def recover(layout: LakeLayout) -> Recovery:
    """Finishes or drops the commits that processes no longer alive left under way."""
    completed = dropped = 0
    if not layout.staging.is_dir():
        return Recovery(0, 0)
    for owner in sorted(p for p in layout.staging.iterdir() if p.is_dir()):
        lock_path = owner.with_name(owner.name + _LOCK_SUFFIX)
        with _lock_if_dead(lock_path) as dead:
            if not dead:
                continue
            for commit in sorted(
                (p for p in owner.iterdir() if p.is_dir()), key=lambda p: int(p.name)
            ):
                if (commit / RECORD).is_file():
                    _carry_out(layout, commit)
                    completed += 1
                else:
                    shutil.rmtree(commit)
                    dropped += 1
            shutil.rmtree(owner)
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
    for stray in layout.staging.glob(f"*{_LOCK_SUFFIX}"):  # a lock whose directory is gone
        with _lock_if_dead(stray) as dead:
            if dead and not stray.with_suffix("").exists():
                with contextlib.suppress(FileNotFoundError):
                    stray.unlink()
    return Recovery(completed, dropped)


@contextlib.contextmanager
def _lock_if_dead(lock_path: Path):  # type: ignore[no-untyped-def]
    """Yields True holding the owner's lock when its owner is gone (or it has none)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _carry_out(layout: LakeLayout, directory: Path) -> None:
    """Moves a committed commit's files into place and removes what it replaces; safe to
    run again after a crash at any point of it."""
    record_path = directory / RECORD
    try:
        record = json.loads(record_path.read_bytes())
        parts = [(str(date), str(name)) for date, name in record["parts"]]
        removes = [layout.root / str(path) for path in record["removes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise LakeCorruptError(f"{record_path}: unreadable commit record: {exc}") from exc
    touched: set[Path] = set()
    for date, name in parts:
        staged = directory / date / name
        target = layout.day(date) / name
        if staged.exists():
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                touched.add(target.parent.parent)
            os.replace(staged, target)
            touched.add(target.parent)
    for directory_touched in touched:
        fsync_directory(directory_touched)
    emptied: set[Path] = set()
    for path in removes:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            emptied.add(path.parent)
    for directory_emptied in emptied:
        fsync_directory(directory_emptied)
    shutil.rmtree(directory)
