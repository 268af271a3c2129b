"""Reads event logs from disk into an :class:`~central.eventlog.EventLog`.

Two formats:

``diginetica``
    The CIKM Cup 2016 item-view log: ``;``-separated with the header
    ``session_id;user_id;item_id;timeframe;eventdate`` (the original ``sessionId;userId;...``
    spelling is accepted too). An event's time is midnight UTC of ``eventdate`` (YYYY-MM-DD)
    plus ``timeframe`` milliseconds. Every event is a ``view``; ``user_id`` is not kept.

``csv``
    A ``,``-separated file whose header names ``item_id``, ``timestamp`` and ``session_id``,
    and optionally ``event_type``, ``category``, ``price`` and ``user_id``, in any order.
    Other columns are ignored. ``event_type`` holds a name from
    :data:`protocol.events.EVENT_TYPES` (an empty cell, or no such column, means ``view``);
    an empty ``category`` or ``price`` means unknown. Timestamps are whole or fractional
    numbers, in seconds or milliseconds, decided once per file: when the largest timestamp
    is below 10^11 the file is in seconds (10^11 s lies in the year 5138, 10^11 ms in March
    1973, so only a millisecond log wholly before 1973 would be misread).

    A log of people rather than sessions (``user_id`` and no ``session_id``) is cut into
    sessions: each person's events in time order, a new session after more than
    ``session_gap_s`` seconds without an event. Session keys read ``<user>#<n>``, n from 1.

A malformed row raises :class:`~central.errors.DataFormatError` naming the file, the line and
what is wrong, unless ``skip_bad_rows`` is set, in which case it is counted and skipped.

:func:`read_log` reads a whole file; :class:`LogChunks` reads the same rows a bounded chunk
at a time (the lake's importer), leaving the two whole-file steps (seconds or milliseconds,
and cutting a log of people into sessions) to its caller through :func:`milliseconds` and
:func:`session_numbers`, which :func:`read_log` uses too.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv

from central.datasets_columns import (
    RAW_SCHEMA,
    Column,
    GenericColumns,
    diginetica_table,
    generic_table,
    row_columns,
    rows_table,
)
from central.errors import DataFormatError
from central.eventlog import EventLog, build_log
from protocol.events import EVENT_TYPE_CODES, MAX_TS_MS

LogFormat = Literal["diginetica", "csv"]

DEFAULT_SESSION_GAP_S: Final = 30 * 60
SECONDS_BELOW: Final = 10**11
SKIP_REASONS_KEPT: Final = 5
_BLOCK_BYTES: Final = 16 * 1024 * 1024  # Arrow's csv batches

_VIEW: Final = EVENT_TYPE_CODES["view"]
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGINETICA_COLUMNS: Final = ("session_id", "user_id", "item_id", "timeframe", "eventdate")
_CSV_OPTIONAL: Final = ("event_type", "category", "price", "user_id", "session_id")


@dataclass(frozen=True, slots=True)
class ReadStats:
    rows_read: int  # data rows in the file, header and blank lines not counted
    rows_skipped: int
    sessions_from_users: int  # sessions cut from a log of people; 0 for a log of sessions
    skip_reasons: tuple[str, ...] = field(default=())  # the first few, with their lines

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_skipped


class _BadRow(Exception):
    """A row-level problem; turned into a DataFormatError or a skip by the reader loop."""


@dataclass(slots=True)
class Rows:
    """Parallel per-row lists, the shape :func:`build_log` takes."""

    keys: list[str] = field(default_factory=list)  # session keys, or user keys before cutting
    items: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # as written in the file
    types: list[int] = field(default_factory=list)
    categories: list[str | None] = field(default_factory=list)
    prices: list[float | None] = field(default_factory=list)
    # The user_id column of a log of sessions that has one (None: no such column).
    users: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, item: str, when: float, event_type: int, category: str | None,
            price: float | None) -> None:
        self.keys.append(key)
        self.items.append(item)
        self.times.append(when)
        self.types.append(event_type)
        self.categories.append(category)
        self.prices.append(price)

    def table(self) -> pa.Table:
        return rows_table(self.keys, self.items, self.times, self.types, self.categories,
                          self.prices, self.users)  # fmt: skip


@dataclass(slots=True)
class _Tally:
    path: Path
    skip_bad_rows: bool
    read: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def bad(self, line: int, problem: str) -> None:
        if not self.skip_bad_rows:
            raise DataFormatError(problem, path=str(self.path), line=line)
        self.skipped += 1
        if len(self.reasons) < SKIP_REASONS_KEPT:
            self.reasons.append(f"line {line}: {problem}")


def read_log(
    path: Path,
    fmt: LogFormat,
    *,
    skip_bad_rows: bool = False,
    session_gap_s: float = DEFAULT_SESSION_GAP_S,
) -> tuple[EventLog, ReadStats]:
    """Reads ``path`` in format ``fmt``; see the module docstring for both formats."""
    with LogChunks(path, fmt, skip_bad_rows=skip_bad_rows) as chunks:
        table = pa.concat_tables([RAW_SCHEMA.empty_table(), *chunks])
        from_users = chunks.from_users
        tally = chunks.tally
    if not table.num_rows:
        raise DataFormatError("the log holds no usable event rows", path=str(path))
    times = table.column("time").to_numpy()
    in_ms = milliseconds(times, path) if fmt == "csv" else times.astype(np.int64)
    ts_ms = in_ms.tolist()
    sessions_made = 0
    session_keys = table.column("key").to_pylist()
    if from_users:
        session_keys, sessions_made = _cut_sessions(session_keys, ts_ms, session_gap_s)
    log = build_log(
        session_keys, table.column("item").to_pylist(), ts_ms,
        table.column("type").to_pylist(), table.column("category").to_pylist(),
        [None if p != p else p for p in table.column("price").to_pylist()],
    )  # fmt: skip
    stats = ReadStats(tally.read, tally.skipped, sessions_made, tuple(tally.reasons))
    return log, stats


class LogChunks:
    """The rows of a log file, ``chunk_rows`` at a time: ``with LogChunks(...) as chunks:
    for rows in chunks: ...``. The header is read on entering (and ``from_users`` set);
    times are as written in the file (see :func:`milliseconds`) and keys of a log of
    people are user keys (see :func:`session_numbers`). Malformed rows raise or are
    counted in ``tally`` as :func:`read_log` does."""

    def __init__(
        self, path: Path, fmt: LogFormat, *, skip_bad_rows: bool = False,
        chunk_rows: int = 250_000, block_bytes: int = _BLOCK_BYTES,
    ) -> None:  # fmt: skip
        if fmt not in ("diginetica", "csv"):
            raise DataFormatError(
                f"unknown log format {fmt!r}; use diginetica or csv", path=str(path)
            )
        self.path = path
        self.fmt = fmt
        self.chunk_rows = chunk_rows
        self.block_bytes = block_bytes  # of the file, per batch Arrow tokenizes
        self.tally = _Tally(path, skip_bad_rows)
        self.from_users = False
        self._binary: io.BufferedReader | None = None
        self._text: io.TextIOWrapper | None = None
        self._rows: Iterator[pa.Table] | None = None
        self._stream: pa.NativeFile | None = None

    @property
    def bytes_read(self) -> int:
        """How far into the file reading has got (for progress)."""
        stream = self._stream
        if stream is not None and not stream.closed:
            return max(int(stream.tell()), self._binary_position())
        return self._binary_position()

    def _binary_position(self) -> int:
        binary = self._binary
        return binary.tell() if binary is not None and not binary.closed else 0

    def __enter__(self) -> Self:
        path = self.path
        with _file_errors(path):
            self._binary = path.open("rb")
            self._text = io.TextIOWrapper(self._binary, newline="", encoding="utf-8-sig")
            try:
                delimiter = ";" if self.fmt == "diginetica" else ","
                reader = csv.reader(self._text, delimiter=delimiter)
                if self.fmt == "diginetica":
                    width, fast, slow = _read_diginetica(reader, self.tally)
                else:
                    self.from_users, width, fast, slow = _read_generic(reader, self.tally)
                arrow = None
                if reader.line_num == 1:  # the header is the first line: Arrow can skip it
                    arrow = self._arrow_batches(delimiter, width)
                self._rows = _chunks(
                    reader, self.tally, self.chunk_rows, width, fast, slow, arrow
                )
            except BaseException:
                self._text.close()
                raise
        return self

    def _arrow_batches(self, delimiter: str, width: int) -> Iterator[pa.RecordBatch] | None:
        """The data rows tokenized by Arrow's csv reader, every cell a string; None when it
        refuses the file's start (the csv module reads it then)."""
        names = [f"c{i}" for i in range(width)]
        self._stream = pa.input_stream(str(self.path))
        try:
            batches: Iterator[pa.RecordBatch] = pa_csv.open_csv(
                self._stream,
                read_options=pa_csv.ReadOptions(
                    column_names=names, skip_rows=1, use_threads=False, block_size=self.block_bytes
                ),
                parse_options=pa_csv.ParseOptions(delimiter=delimiter),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )  # fmt: skip
        except pa.ArrowInvalid:
            return None
        return batches

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._text is not None:
            self._text.close()
        if self._stream is not None:
            self._stream.close()

    def __iter__(self) -> Iterator[pa.Table]:
        if self._rows is None:
            raise RuntimeError("enter LogChunks with 'with' first")
        while True:
            with _file_errors(self.path):
                chunk = next(self._rows, None)
            if chunk is None:
                return
            yield chunk


@contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DataFormatError(f"cannot read the file: {reason}", path=str(path)) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"not a readable text log: {exc}", path=str(path)) from exc


class _CsvReader(Protocol):
    @property
    def line_num(self) -> int: ...

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


def _header(reader: _CsvReader, path: Path) -> list[str]:
    for row in reader:
        if row and any(cell.strip() for cell in row):
            return [cell.strip().lower() for cell in row]
    raise DataFormatError("the file is empty: expected a header line", path=str(path))


def _read_diginetica(reader: _CsvReader, tally: _Tally) -> tuple[int, _Fast, _Slow]:
    header = [name.replace("_", "") for name in _header(reader, tally.path)]
    wanted = [name.replace("_", "") for name in _DIGINETICA_COLUMNS]
    missing = [name for name, norm in zip(_DIGINETICA_COLUMNS, wanted, strict=True)
               if norm not in header]
    if missing:
        raise DataFormatError(
            f"header lacks column(s) {', '.join(missing)}; expected "
            f"{';'.join(_DIGINETICA_COLUMNS)}",
            path=str(tally.path), line=1,
        )
    col_session, col_item, col_frame, col_date = (
        header.index(wanted[0]), header.index(wanted[2]), header.index(wanted[3]),
        header.index(wanted[4]),
    )
    width = len(header)
    columns = (col_session, col_item, col_frame, col_date)
    midnight_ms: dict[str, int] = {}

    def midnight_or_none(date: str) -> int | None:
        try:
            return _midnight_utc_ms(date)
        except _BadRow:
            return None

    def fast(column: Column, count: int) -> pa.Table | None:
        return diginetica_table(column, count, columns, midnight_or_none)

    def slow(lines: list[int], raw: list[list[str]]) -> pa.Table:
        return _diginetica_row_by_row(lines, raw, tally, width, columns, midnight_ms)

    return width, fast, slow


def _diginetica_row_by_row(
    lines: list[int], raw: list[list[str]], tally: _Tally, width: int,
    columns: tuple[int, int, int, int], midnight_ms: dict[str, int],
) -> pa.Table:  # fmt: skip
    col_session, col_item, col_frame, col_date = columns
    rows = Rows()
    for line, row in zip(lines, raw, strict=True):
        try:
            if len(row) != width:
                raise _BadRow(f"expected {width} columns, found {len(row)}")
            session = row[col_session].strip()
            item = row[col_item].strip()
            if not session:
                raise _BadRow("empty session_id")
            if not item:
                raise _BadRow("empty item_id")
            frame = _non_negative_int(row[col_frame], "timeframe")
            date = row[col_date].strip()
            day_ms = midnight_ms.get(date)
            if day_ms is None:
                day_ms = midnight_ms[date] = _midnight_utc_ms(date)
        except _BadRow as exc:
            tally.bad(line, str(exc))
            continue
        rows.add(session, item, day_ms + frame, _VIEW, None, None)
    return rows.table()


def _read_generic(reader: _CsvReader, tally: _Tally) -> tuple[bool, int, _Fast, _Slow]:
    header = _header(reader, tally.path)
    columns = {name: header.index(name) for name in ("item_id", "timestamp", *_CSV_OPTIONAL)
               if name in header}
    duplicated = sorted({name for name in columns if header.count(name) > 1})
    if duplicated:
        raise DataFormatError(f"header repeats column(s) {', '.join(duplicated)}",
                              path=str(tally.path), line=1)
    missing = [name for name in ("item_id", "timestamp") if name not in columns]
    if "session_id" not in columns and "user_id" not in columns:
        missing.append("session_id (or user_id for a log of people)")
    if missing:
        raise DataFormatError(f"header lacks column(s) {', '.join(missing)}",
                              path=str(tally.path), line=1)
    from_users = "session_id" not in columns
    col_key = columns["user_id" if from_users else "session_id"]
    key_name = "user_id" if from_users else "session_id"
    col_item, col_time = columns["item_id"], columns["timestamp"]
    col_type = columns.get("event_type")
    col_category = columns.get("category")
    col_price = columns.get("price")
    col_user = None if from_users else columns.get("user_id")
    shape = GenericColumns(len(header), key_name, col_key, col_item, col_time, col_type,
                            col_category, col_price, col_user)  # fmt: skip

    def fast(column: Column, count: int) -> pa.Table | None:
        return generic_table(column, count, shape)

    def slow(lines: list[int], raw: list[list[str]]) -> pa.Table:
        return _generic_row_by_row(lines, raw, tally, shape)

    return from_users, shape.width, fast, slow


_Fast = Callable[[Column, int], "pa.Table | None"]  # a chunk's columns → rows, or None
_Slow = Callable[[list[int], list[list[str]]], pa.Table]  # rows read one at a time


def _chunks(
    reader: _CsvReader, tally: _Tally, chunk_rows: int, width: int, fast: _Fast, slow: _Slow,
    arrow: Iterator[pa.RecordBatch] | None,
) -> Iterator[pa.Table]:  # fmt: skip
    """Chunks checked column by column where every cell is plain; else row by row. Arrow
    tokenizes while it can; from the first batch it or the checks refuse, the csv module
    reads on from the same row (so bad rows are reported with their lines)."""
    delivered = 0
    if arrow is not None:
        try:
            for batch in arrow:
                table = fast(batch.column, batch.num_rows) if batch.num_rows else None
                if table is None and batch.num_rows:
                    break
                tally.read += batch.num_rows
                delivered += batch.num_rows
                if table is not None:
                    yield table
            else:
                return
        except pa.ArrowInvalid:
            pass
        _skip_rows(reader, delivered)
    while True:
        lines, raw = _take_rows(reader, tally, chunk_rows)
        if not raw:
            return
        column = row_columns(raw, width)
        table = None if column is None else fast(column, len(raw))
        if table is None:
            table = slow(lines, raw)
        if table.num_rows:
            yield table


def _skip_rows(reader: _CsvReader, count: int) -> None:
    """Passes over ``count`` non-blank rows (read already, by Arrow)."""
    skipped = 0
    while skipped < count:
        row = next(reader)
        if row and not (len(row) == 1 and not row[0].strip()):
            skipped += 1


def _generic_row_by_row(
    lines: list[int], raw: list[list[str]], tally: _Tally, shape: GenericColumns
) -> pa.Table:
    width, key_name, col_key, col_item, col_time = (
        shape.width, shape.key_name, shape.key, shape.item, shape.time,
    )  # fmt: skip
    col_type, col_category, col_price, col_user = (
        shape.type, shape.category, shape.price, shape.user,
    )  # fmt: skip
    rows = Rows(users=None if col_user is None else [])
    for line, row in zip(lines, raw, strict=True):
        try:
            if len(row) != width:
                raise _BadRow(f"expected {width} columns, found {len(row)}")
            key = row[col_key].strip()
            item = row[col_item].strip()
            if not key:
                raise _BadRow(f"empty {key_name}")
            if not item:
                raise _BadRow("empty item_id")
            when = _timestamp(row[col_time])
            event_type = _VIEW if col_type is None else _event_type(row[col_type])
            category = None if col_category is None else (row[col_category].strip() or None)
            price = None if col_price is None else _price(row[col_price])
        except _BadRow as exc:
            tally.bad(line, str(exc))
            continue
        rows.add(key, item, when, event_type, category, price)
        if rows.users is not None:
            rows.users.append(row[col_user].strip() or None)  # type: ignore[index]
    return rows.table()


def _take_rows(
    reader: _CsvReader, tally: _Tally, count: int
) -> tuple[list[int], list[list[str]]]:
    """Up to ``count`` non-blank rows after the header, with their (last) line numbers."""
    lines: list[int] = []
    rows: list[list[str]] = []
    add_line, add_row = lines.append, rows.append
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        add_row(row)
        add_line(reader.line_num)
        if len(rows) >= count:
            break
    tally.read += len(rows)
    return lines, rows


def _non_negative_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _BadRow(f"{name} {text.strip()[:40]!r} is not a whole number") from None
    if value < 0:
        raise _BadRow(f"{name} {value} is negative")
    return value


def _midnight_utc_ms(text: str) -> int:
    if not _DATE.fullmatch(text):
        raise _BadRow(f"eventdate {text[:40]!r} is not a YYYY-MM-DD date")
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise _BadRow(f"eventdate {text!r} is not a calendar date") from None
    return int(day.timestamp()) * 1000


def _timestamp(text: str) -> float:
    value: float
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise _BadRow(f"timestamp {text.strip()[:40]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise _BadRow(f"timestamp {text.strip()[:40]!r} is not a finite number >= 0")
    return value


def _event_type(text: str) -> int:
    name = text.strip()
    if not name:
        return _VIEW
    code = EVENT_TYPE_CODES.get(name)
    if code is None:
        raise _BadRow(f"unknown event_type {name[:40]!r}")
    return code


def _price(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _BadRow(f"price {text[:40]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise _BadRow(f"price {text[:40]!r} is not a finite number >= 0")
    return value


def milliseconds(raw: npt.NDArray[np.float64], path: Path) -> npt.NDArray[np.int64]:
    """A csv log's times in milliseconds: in seconds when the largest is below 10^11."""
    scale = 1000.0 if raw.size and float(raw.max()) < SECONDS_BELOW else 1.0
    return scaled_milliseconds(raw, scale, path)


def scaled_milliseconds(
    raw: npt.NDArray[np.float64], scale: float, path: Path
) -> npt.NDArray[np.int64]:
    ms = np.rint(raw * scale).astype(np.int64)
    if ms.size and int(ms.max()) >= MAX_TS_MS:
        raise DataFormatError(
            "timestamps are too large for seconds or milliseconds since the epoch "
            "(microseconds or nanoseconds are not accepted)", path=str(path),
        )
    return ms


def session_numbers(
    user_codes: npt.NDArray[np.int64], ts_ms: npt.NDArray[np.int64], gap_s: float
) -> tuple[npt.NDArray[np.int64], int]:
    """Each row's session number within its user (from 1) for a log of people, and how many
    sessions there are: a user's events in time order (ties in row order), a new session
    after a gap of more than ``gap_s``."""
    order = np.lexsort((np.arange(ts_ms.shape[0]), ts_ms, user_codes))
    sorted_users = user_codes[order]
    sorted_times = ts_ms[order]
    new_user = np.ones(order.shape[0], dtype=bool)
    new_user[1:] = sorted_users[1:] != sorted_users[:-1]
    starts = new_user.copy()
    starts[1:] |= np.diff(sorted_times) > gap_s * 1000
    session_no = np.cumsum(starts)
    first_of_user = np.maximum.accumulate(np.where(new_user, session_no, 0))
    number_in_user = (session_no - first_of_user + 1)[np.argsort(order)]
    return number_in_user, int(session_no[-1]) if session_no.size else 0


def _cut_sessions(
    users: list[str], ts_ms: list[int], gap_s: float
) -> tuple[list[str], int]:
    """Session keys ``<user>#<n>`` for a log of people; a gap over ``gap_s`` starts a session."""
    index: dict[str, int] = {}
    user_codes = np.fromiter(
        (index.setdefault(user, len(index)) for user in users), dtype=np.int64, count=len(users)
    )
    numbers, sessions = session_numbers(user_codes, np.asarray(ts_ms, dtype=np.int64), gap_s)
    keys = [f"{user}#{n}" for user, n in zip(users, numbers.tolist(), strict=True)]
    return keys, sessions
