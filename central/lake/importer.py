"""``proxima lake import``: an event log file into the lake, all of it or nothing.

The file is read with :class:`central.datasets.LogChunks` (the formats and rules of
:func:`central.datasets.read_log`, a bounded chunk at a time). Two passes, both columnar:
the first turns each chunk into Arrow arrays and spills them into the import's staging
directory (Arrow IPC, uncompressed); what needs the whole file — seconds or milliseconds,
and the sessions of a log of people — is then decided once, as ``read_log`` decides it;
the second pass reads the spilled chunks back, completes the rows and appends them to one
Parquet file per event day. Rows get ``kafka_partition = -1`` and offsets counting on from
the lake's last import, so event ids (``imp-<offset>``) never repeat. The files become
visible together in one commit (:mod:`central.lake.commit`): a failed or interrupted
import leaves the lake as it was. Imports into one lake take turns (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from central.datasets import (
    DEFAULT_SESSION_GAP_S,
    SECONDS_BELOW,
    LogChunks,
    LogFormat,
    scaled_milliseconds,
    session_numbers,
)
from central.datasets_columns import RAW_SCHEMA
from central.errors import DataFormatError
from central.lake.commit import Commit, Stager, recover, sync_file
from central.lake.layout import LakeLayout, event_date, open_lake
from central.lake.names import IMPORT_PARTITION, commit_part
from central.lake.offsets import high_water
from central.lake.schema import SCHEMA
from central.lake.tables import (
    Source,
    event_types,
    parquet_writer,
    table_from_columns,
    with_source,
)

Progress = Callable[[int, int, int], None]  # rows so far, bytes read, bytes in the file
CHUNK_ROWS: Final = 250_000
MAX_OPEN_FILES: Final = 128
_DAY_MS: Final = 86_400_000
_LOCK: Final = "import.lock"


@dataclass(frozen=True, slots=True)
class ImportResult:
    events: int
    rows_skipped: int
    sessions_from_users: int
    days: int
    files: int
    first_offset: int
    last_offset: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_log(
    data: Path, fmt: LogFormat, lake_root: Path, *, skip_bad_rows: bool = False,
    session_gap_s: float = DEFAULT_SESSION_GAP_S, progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportResult:  # fmt: skip
    started = time.perf_counter()
    layout = open_lake(lake_root, create=True)
    with _import_lock(layout):
        recover(layout)
        stager = Stager(layout)
        try:
            return _import(
                data, fmt, layout, stager, skip_bad_rows, session_gap_s, progress, chunk_rows,
                started,
            )  # fmt: skip
        finally:
            stager.close()


def _import(
    data: Path, fmt: LogFormat, layout: LakeLayout, stager: Stager, skip_bad_rows: bool,
    session_gap_s: float, progress: Progress | None, chunk_rows: int, started: float,
) -> ImportResult:  # fmt: skip
    total_bytes = data.stat().st_size
    commit = stager.begin()
    spill = commit.directory / "_spill"
    spill.mkdir()
    chunk_sizes: list[int] = []
    max_time = -1.0
    with LogChunks(data, fmt, skip_bad_rows=skip_bad_rows, chunk_rows=chunk_rows) as chunks:
        for raw in chunks:
            if raw.num_rows:
                max_time = max(max_time, float(pc.max(raw.column("time")).as_py()))
            with ipc.new_file(spill / f"{len(chunk_sizes)}.arrow", RAW_SCHEMA) as sink:
                sink.write_table(raw)
            chunk_sizes.append(raw.num_rows)
            if progress is not None:
                progress(sum(chunk_sizes), chunks.bytes_read, total_bytes)
        from_users, tally = chunks.from_users, chunks.tally
    events = sum(chunk_sizes)
    if events == 0:
        commit.abandon()
        raise DataFormatError("the log holds no usable event rows", path=str(data))
    scale = 1.0 if fmt == "diginetica" or max_time >= SECONDS_BELOW else 1000.0
    first = high_water(layout).get(IMPORT_PARTITION, -1) + 1
    source = Source("", IMPORT_PARTITION, first, first + events - 1)
    sessions: _Sessions | None = None
    if from_users:
        sessions = _Sessions.of(spill, len(chunk_sizes), scale, data, session_gap_s)
    files = _DayFiles(commit, source)
    try:
        offset = first
        for number in range(len(chunk_sizes)):
            raw = _spilled(spill, number)
            numbers = None if sessions is None else sessions.take(raw.num_rows)
            table = _lake_rows(raw, offset, scale, data, numbers)
            files.append(table)
            offset += raw.num_rows
        names = files.close()
    except BaseException:
        files.abort()
        commit.abandon()
        raise
    for path in spill.iterdir():
        path.unlink()
    spill.rmdir()
    commit.finish()
    return ImportResult(
        events=events, rows_skipped=tally.skipped,
        sessions_from_users=0 if sessions is None else sessions.count,
        days=len({date for date, _ in names}), files=len(names),
        first_offset=source.first_offset, last_offset=source.last_offset,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def _spilled(spill: Path, number: int) -> pa.Table:
    with pa.memory_map(str(spill / f"{number}.arrow")) as mapped:
        return ipc.open_file(mapped).read_all()


@dataclass(slots=True)
class _Sessions:
    """Session numbers of a log of people, computed over the whole file, handed out in
    chunk order."""

    numbers: np.ndarray[Any, np.dtype[np.int64]]
    count: int
    at: int = 0

    @classmethod
    def of(cls, spill: Path, chunks: int, scale: float, data: Path, gap_s: float) -> _Sessions:
        keys: list[pa.Array] = []
        times: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        for number in range(chunks):
            table = _spilled(spill, number)
            keys.extend(table.column("key").chunks)
            raw_times = table.column("time").to_numpy()
            times.append(scaled_milliseconds(raw_times, scale, data))
        codes = pa.chunked_array(keys, pa.string()).combine_chunks().dictionary_encode()
        user_codes = codes.indices.to_numpy().astype(np.int64)
        numbers, count = session_numbers(user_codes, np.concatenate(times), gap_s)
        return cls(numbers, count)

    def take(self, rows: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        taken = self.numbers[self.at : self.at + rows]
        self.at += rows
        return taken


def _lake_rows(
    raw: pa.Table, first_offset: int, scale: float, data: Path,
    session_numbers_of_rows: np.ndarray[Any, np.dtype[np.int64]] | None,
) -> pa.Table:  # fmt: skip
    rows = raw.num_rows
    ts = scaled_milliseconds(raw.column("time").to_numpy(), scale, data)
    offsets = pa.array(np.arange(first_offset, first_offset + rows, dtype=np.int64))
    event_ids = pc.binary_join_element_wise(
        "imp-", pc.utf8_lpad(pc.cast(offsets, pa.string()), 12, "0"), ""
    )
    key = raw.column("key")
    user = raw.column("user")
    if session_numbers_of_rows is not None:
        user = key
        numbers = pc.cast(pa.array(session_numbers_of_rows), pa.string())
        key = pc.binary_join_element_wise(key, numbers, "#")
    columns = {
        "event_id": event_ids, "session_id": key, "user_id": user,
        "type": event_types(raw.column("type").combine_chunks()), "ts": pa.array(ts),
        "item_id": raw.column("item"), "category": raw.column("category"),
        "price": raw.column("price"), "kafka_offset": offsets,
        "kafka_partition": pa.array(np.full(rows, IMPORT_PARTITION, dtype=np.int32)),
    }  # fmt: skip
    combined = {
        k: v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for k, v in columns.items()
    }
    return table_from_columns(combined, rows)


class _DayFiles:
    """One Parquet file per event day in the commit's staging directory, appended to chunk
    by chunk; beyond ``MAX_OPEN_FILES`` days at once the oldest file is closed and a later
    chunk of its day starts another."""

    def __init__(self, commit: Commit, source: Source) -> None:
        self._commit = commit
        self._source = source
        self._schema = with_source(SCHEMA.empty_table(), source).schema
        self._open: dict[str, tuple[Path, Any]] = {}
        self._done: list[tuple[str, Path]] = []
        self._date_of_day: dict[int, str] = {}

    def append(self, table: pa.Table) -> None:
        days = table.column("ts").to_numpy() // _DAY_MS
        order = np.argsort(days, kind="stable")  # each day's rows together, in file order
        by_day = table.take(pa.array(order))
        sorted_days = days[order]
        starts = np.flatnonzero(np.diff(sorted_days)) + 1
        bounds = [0, *starts.tolist(), len(sorted_days)]
        for start, stop in itertools.pairwise(bounds):
            day = int(sorted_days[start])
            date = self._date_of_day.get(day)
            if date is None:
                date = self._date_of_day[day] = event_date(day * _DAY_MS)
            self._writer(date).write_table(by_day.slice(start, stop - start))

    def _writer(self, date: str) -> Any:
        if date in self._open:
            path, writer = self._open.pop(date)
            self._open[date] = (path, writer)  # most recently used last
            return writer
        if len(self._open) >= MAX_OPEN_FILES:
            oldest = next(iter(self._open))
            self._finish(oldest)
        directory = self._commit.directory / date
        directory.mkdir(exist_ok=True)
        path = directory / f"_part-{len(self._done) + len(self._open)}.parquet"
        self._open[date] = (path, parquet_writer(path, self._schema))
        return self._open[date][1]

    def _finish(self, date: str) -> None:
        path, writer = self._open.pop(date)
        writer.close()
        sync_file(path)
        self._done.append((date, path))

    def close(self) -> list[tuple[str, str]]:
        """Names each file as part k of n of the import's commit; returns (date, name)."""
        for date in list(self._open):
            self._finish(date)
        count = len(self._done)
        named: list[tuple[str, str]] = []
        source = self._source
        for k, (date, path) in enumerate(sorted(self._done), start=1):
            name = commit_part(
                IMPORT_PARTITION, source.first_offset, source.last_offset, k, count
            ).file_name
            os.replace(path, self._commit.path_for(date, name))
            named.append((date, name))
        return named

    def abort(self) -> None:
        for _, writer in self._open.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._open.clear()


@contextlib.contextmanager
def _import_lock(layout: LakeLayout) -> Iterator[None]:
    layout.manifests.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.manifests / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
