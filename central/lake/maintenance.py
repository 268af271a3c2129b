"""Keeping a lake in shape: retention by age, compaction of small files, crash leftovers.

Compaction takes a run of a day's files of one partition that follow each other in offset
order and writes them, row group by row group, into one compacted file named for the
range of the run (:mod:`central.lake.names`). It is one commit (:mod:`central.lake.commit`)
that adds the compacted file and removes the run: readers of :meth:`LakeLayout.data_files`
see the run until the compacted file has its name and the compacted file from then on, so
never both; a crash between the two leaves superseded files, which :func:`sweep` (run by
every writer at start) or the commit's recovery removes.

Retention deletes whole days older than a number of days. It first records the offsets
those days held (:func:`central.lake.offsets.save_watermarks`), so writers do not read
them from Kafka again, then hides the day by renaming it to a dot name (readers skip it)
and deletes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from central.lake.commit import Stager, sync_file
from central.lake.layout import DATE_PREFIX, LakeLayout
from central.lake.names import COMPACTED, DataName, parse_name, superseded
from central.lake.offsets import high_water, save_watermarks
from central.lake.tables import Source, open_checked, parquet_writer, source_of, with_source

log = logging.getLogger("proxima.central.lake")

_DELETING: Final = ".deleting-"
SMALL_FILE_BYTES: Final = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Compacted:
    date: str
    partition: int
    inputs: int
    output: str


def sweep(layout: LakeLayout) -> int:
    """Deletes superseded files and half-deleted days; returns how many files went."""
    removed = 0
    if layout.events.is_dir():
        for hidden in layout.events.glob(f"{_DELETING}*"):
            shutil.rmtree(hidden, ignore_errors=True)
    for date in layout.days():
        for path in superseded(layout.day_files(date)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def apply_retention(
    layout: LakeLayout, keep_days: int, *, today: dt.date | None = None
) -> list[str]:
    """Deletes the days before ``today - keep_days``; returns their dates."""
    if keep_days <= 0:
        return []
    current = today or dt.datetime.now(tz=dt.UTC).date()
    cutoff = (current - dt.timedelta(days=keep_days)).isoformat()
    expired = [date for date in layout.days() if date < cutoff]
    if not expired:
        return []
    save_watermarks(layout, high_water(layout, expired))
    for date in expired:
        day = layout.day(date)
        hidden = day.with_name(f"{_DELETING}{DATE_PREFIX}{date}")
        day.rename(hidden)
        shutil.rmtree(hidden)
        log.info("retention: deleted %s (older than %d days)", date, keep_days)
    return expired


def compact(
    layout: LakeLayout,
    stager: Stager,
    *,
    min_files: int,
    partitions: Collection[int] | None = None,
    small_file_bytes: int = SMALL_FILE_BYTES,
) -> list[Compacted]:
    """Compacts every run of at least ``min_files`` small files of a day and partition
    (of ``partitions`` only, when given)."""
    done: list[Compacted] = []
    for date in layout.days():
        files = layout.day_files(date)
        gone = superseded(files)
        by_partition: dict[int, list[tuple[DataName, Path]]] = {}
        for path in files:
            name = parse_name(path.name)
            if name is None or path in gone:
                continue
            if partitions is None or name.partition in partitions:
                by_partition.setdefault(name.partition, []).append((name, path))
        for partition, named in sorted(by_partition.items()):
            for run in _small_runs(sorted(named), small_file_bytes, min_files):
                done.append(_compact_run(layout, stager, date, partition, run))
    return done


def _small_runs(
    named: list[tuple[DataName, Path]], small_file_bytes: int, min_files: int
) -> list[list[tuple[DataName, Path]]]:
    """Runs of consecutive small files: a large file between two small ones ends a run, as
    the compacted file's range would otherwise cover (and supersede) it."""
    runs: list[list[tuple[DataName, Path]]] = [[]]
    for name, path in named:
        if path.stat().st_size < small_file_bytes:
            runs[-1].append((name, path))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if len(run) >= min_files]


def _compact_run(
    layout: LakeLayout, stager: Stager, date: str, partition: int,
    run: list[tuple[DataName, Path]],
) -> Compacted:  # fmt: skip
    first = min(name.first for name, _ in run)
    last = max(name.last for name, _ in run)
    output = DataName(partition, first, last, COMPACTED)
    known = source_of(run[0][1])
    source = Source(known.topic if known else "", partition, first, last)
    commit = stager.begin()
    try:
        target = commit.path_for(date, output.file_name)
        writer = None
        try:
            for _, path in run:
                parquet = open_checked(path)
                for group in range(parquet.num_row_groups):
                    table = with_source(parquet.read_row_group(group), source)
                    if writer is None:
                        writer = parquet_writer(target, table.schema)
                    writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        sync_file(target)
        for _, path in run:
            commit.replace(path)
        commit.finish()
    except BaseException:
        commit.abandon()
        raise
    log.info("compacted %d files of %s partition %d into %s", len(run), date, partition,
             output.file_name)  # fmt: skip
    return Compacted(date, partition, len(run), output.file_name)
