"""What a data file's name says: the source partition and the offsets the file covers.

A committed file is named ``p<partition>-<first>-<last>-<part>.parquet``: ``partition`` is
the Kafka partition its rows came from (``-1`` for an import), ``first`` and ``last`` the
offsets of the commit it belongs to (19 digits, so names sort by offset), and ``part``
either ``<k>of<n>`` (part k of a commit of n files, one or more per day) or ``c`` for a
compacted file. A compacted file holds every row of its day and partition with an offset
in ``[first, last]``, so it *supersedes* any other file of that day and partition whose
range lies within its own: readers skip superseded files (:func:`live_files`), which makes
the moment a compacted file takes its name the moment readers switch to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

COMPACTED: Final = "c"
_NAME: Final = re.compile(r"p(-?\d+)-(\d{19})-(\d{19})-(\d+of\d+|c)\.parquet")
IMPORT_PARTITION: Final = -1


@dataclass(frozen=True, slots=True, order=True)
class DataName:
    partition: int
    first: int
    last: int
    part: str  # "<k>of<n>" or "c"

    @property
    def compacted(self) -> bool:
        return self.part == COMPACTED

    @property
    def file_name(self) -> str:
        return f"p{self.partition}-{self.first:019d}-{self.last:019d}-{self.part}.parquet"

    def covers(self, other: DataName) -> bool:
        """Whether this compacted file holds every row ``other`` holds (same day assumed)."""
        return (
            self.compacted
            and other != self
            and other.partition == self.partition
            and self.first <= other.first
            and other.last <= self.last
        )


def commit_part(partition: int, first: int, last: int, k: int, n: int) -> DataName:
    return DataName(partition, first, last, f"{k}of{n}")


def parse_name(name: str) -> DataName | None:
    """The name's meaning, or None for a file not named by a lake writer."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return DataName(int(match[1]), int(match[2]), int(match[3]), match[4])


def superseded(paths: Iterable[Path]) -> set[Path]:
    """The files of one day that a compacted file of the same day supersedes."""
    named = [(path, parse_name(path.name)) for path in paths]
    compacted = [name for _, name in named if name is not None and name.compacted]
    if not compacted:
        return set()
    return {
        path for path, name in named if name is not None and any(c.covers(name) for c in compacted)
    }


def live_files(paths: Iterable[Path]) -> list[Path]:
    """``paths`` (the data files of one day) without the superseded ones, in name order."""
    chosen = sorted(paths)
    gone = superseded(chosen)
    return [path for path in chosen if path not in gone]
