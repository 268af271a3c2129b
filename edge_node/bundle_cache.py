"""The last good bundles on local disk, so an edge can start and serve while NATS is down.

Files are named ``bundle-<version>.bundle``. A bundle is written atomically
(:func:`runtime.files.atomic_write_bytes`), so a crash leaves either the whole file or none
of it. The cache keeps the ``keep`` most recently stored bundles, which is not always the
highest versions: a rollback stores an older one.

The cache holds bytes, not trust: whoever loads a cached bundle verifies it like any other.
Blocking file I/O; call it from a worker thread in async code.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runtime.files import atomic_write_bytes, remove_temporaries

log = logging.getLogger("proxima.edge.bundle_cache")

BUNDLE_SUFFIX: Final = ".bundle"
ABANDONED_TEMP_AGE_S: Final = 3600.0
_BUNDLE_NAME: Final = re.compile(r"bundle-([1-9][0-9]{0,18})\.bundle")


@dataclass(frozen=True, slots=True)
class CachedBundle:
    version: int
    path: Path
    stored_ns: int  # modification time; the most recently stored bundle has the largest


class BundleCache:
    def __init__(self, directory: Path, *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("the cache must keep at least one bundle")
        self.directory = directory
        self.keep = keep

    def path_of(self, version: int) -> Path:
        return self.directory / f"bundle-{version}{BUNDLE_SUFFIX}"

    def entries(self) -> list[CachedBundle]:
        """The cached bundles, most recently stored first."""
        found: list[CachedBundle] = []
        try:
            children = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        for path in children:
            match = _BUNDLE_NAME.fullmatch(path.name)
            if match is None:
                continue
            try:
                stored_ns = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue  # pruned by another writer meanwhile
            found.append(CachedBundle(int(match.group(1)), path, stored_ns))
        found.sort(key=lambda entry: (entry.stored_ns, entry.version), reverse=True)
        return found

    def versions(self) -> list[int]:
        """Cached versions, most recently stored first."""
        return [entry.version for entry in self.entries()]

    def read(self, version: int) -> bytes:
        return self.path_of(version).read_bytes()

    def latest(self) -> tuple[int, bytes] | None:
        """The most recently stored bundle that can be read, or None if there is none."""
        for entry in self.entries():
            try:
                return entry.version, entry.path.read_bytes()
            except OSError as exc:
                log.warning("cannot read cached bundle %s: %s", entry.path, exc.strerror)
        return None

    def store(self, version: int, data: bytes) -> Path:
        """Writes the bundle atomically, makes it the latest and prunes the oldest."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"bundle version must be a positive integer, got {version!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        newest_before = max((entry.stored_ns for entry in self.entries()), default=0)
        target = self.path_of(version)
        # Coarse file-system clocks could tie with an earlier bundle: be strictly newer.
        stored_ns = max(time.time_ns(), newest_before + 1)
        atomic_write_bytes(target, data, mtime_ns=stored_ns)
        self._prune()
        return target

    def _prune(self) -> None:
        for entry in self.entries()[self.keep :]:
            try:
                entry.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove old cached bundle %s: %s", entry.path, exc.strerror)
        with contextlib.suppress(OSError):
            remove_temporaries(self.directory, older_than_s=ABANDONED_TEMP_AGE_S)
