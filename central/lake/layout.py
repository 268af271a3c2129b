"""Where the lake keeps things under its root.

``<root>/events/v<version>/date=YYYY-MM-DD/<name>.parquet`` holds the events of one UTC
day (Hive-style, so DuckDB and Spark read the partition column ``date`` from the path);
``<root>/_manifests/`` holds what writers commit with their files (the Kafka offsets a
file covers). Files whose names start with ``.`` or ``_`` are not data: readers skip them,
as Hive, Spark and DuckDB do, so a file being written (``.name.tmp``) is never read.
``<root>/_staging/`` holds commits under way (:mod:`central.lake.commit`).

A file's name records the offsets it covers (:mod:`central.lake.names`); a compacted file
supersedes the files it replaced from the moment it has its name, and :meth:`data_files`
leaves superseded files out. :meth:`glob` cannot: a reader that globs may, for the instant
between a compaction's rename and its removal of the inputs (or until the next writer
start after a crash there), see rows twice. Pass :meth:`data_files` to readers that take
a list of files.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from central.lake.errors import LakeError, LakeNotFoundError
from central.lake.names import live_files
from central.lake.schema import SCHEMA_VERSION

EVENTS_DIR: Final = "events"
MANIFESTS_DIR: Final = "_manifests"
STAGING_DIR: Final = "_staging"
DATE_PREFIX: Final = "date="
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


def event_date(ts_ms: int) -> str:
    """The UTC date (``YYYY-MM-DD``) of an event time in milliseconds."""
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class LakeLayout:
    root: Path

    @property
    def events(self) -> Path:
        return self.root / EVENTS_DIR / f"v{SCHEMA_VERSION}"

    @property
    def manifests(self) -> Path:
        return self.root / MANIFESTS_DIR

    @property
    def staging(self) -> Path:
        return self.root / STAGING_DIR

    def day(self, date: str) -> Path:
        return self.events / f"{DATE_PREFIX}{date}"

    def days(self) -> list[str]:
        """The dates that have a partition directory, oldest first."""
        if not self.events.is_dir():
            return []
        return sorted(
            entry.name.removeprefix(DATE_PREFIX)
            for entry in self.events.iterdir()
            if entry.is_dir() and entry.name.startswith(DATE_PREFIX)
        )

    def data_files(self, dates: list[str] | None = None) -> list[Path]:
        """Every committed Parquet file, by date then name; ``dates`` limits the days.

        Files a compacted file supersedes are left out."""
        chosen = self.days() if dates is None else dates
        files: list[Path] = []
        for date in chosen:
            files.extend(live_files(self.day_files(date)))
        return files

    def day_files(self, date: str) -> list[Path]:
        """Every Parquet file of one day that has its name, superseded ones included."""
        directory = self.day(date)
        if not directory.is_dir():
            return []
        return sorted(
            path
            for path in directory.iterdir()
            if path.suffix == ".parquet" and not path.name.startswith((".", "_"))
        )

    def glob(self) -> str:
        """The pattern DuckDB and Spark read every data file with."""
        return str(self.events / f"{DATE_PREFIX}*" / "*.parquet")


def open_lake(root: str | Path, *, create: bool = False) -> LakeLayout:
    """The layout of the lake at ``root``; a missing root is an error unless ``create``.

    Only local (or mounted) directories: a URL such as ``s3://`` or ``gs://`` is refused by
    name rather than taken for a relative directory called ``s3:``."""
    if _URL.match(str(root)):  # Path("s3://b") reads "s3:/b"
        raise LakeError(
            f"lake {root}: object-store lakes are not supported by this version; use a "
            "local directory or a mounted file system",
            field="lake",
        )
    path = Path(root)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.is_dir():
        raise LakeNotFoundError(f"lake {path} does not exist")
    return LakeLayout(path)
