"""An append-only on-disk spool: every accepted event waits here until it is published.

Layout
------
A directory holds segment files named by the sequence number of their first record
(``00000000000000000001.seg``), a ``cursor`` file and a ``LOCK`` file. A segment starts with
the 8-byte header ``PXSPOOL\\x01``, followed by frames (integers little-endian)::

    offset  size  field
    0       4     magic b"\\xa9PXR": lets a reader find the next frame after damaged bytes
    4       4     payload length, at most MAX_RECORD_BYTES
    8       8     sequence number: consecutive from 1, never reused
    16      8     append time, ms since the epoch
    24      4     CRC-32 of bytes 4..24 and of the payload
    28      n     payload

A segment is rolled (the finished one flushed to disk) when the next append would take it
past ``segment_bytes``; one append never spans two segments. ``cursor`` holds the sequence
number of the last committed record and is replaced atomically (write, fsync, rename).

Guarantees
----------
* When :meth:`Spool.append` returns, its records are in the OS page cache: they survive the
  process being killed (SIGKILL included), but not a machine crash or power loss.
* When :meth:`Spool.fsync` returns, every record appended before the call also survives a
  machine crash.
* Reading is at-least-once: after a restart, reading resumes after the last committed record,
  so records read but not committed are delivered again.

Opening scans the newest segment and truncates a torn tail (a partial frame or a CRC mismatch
at the end, left by a crash in the middle of a write). Damaged bytes anywhere else are skipped
by the reader up to the next valid frame, counted and logged; damaged data never raises.

Threads: the writer side (``append``, ``fsync``) and the reader side (``read``, ``commit``,
``rewind``) may run in different threads. Calls of one side must not overlap, except that
``fsync`` may overlap ``append``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple

from edge_node.uplink.errors import (
    RecordTooLargeError,
    SpoolClosedError,
    SpoolFullError,
    SpoolIOError,
    SpoolLockedError,
)
from runtime.files import atomic_write_bytes, fsync_directory, remove_temporaries

log = logging.getLogger("proxima.edge.spool")

MAX_RECORD_BYTES: Final = 64 * 1024
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_BYTES: Final = 1024 * 1024 * 1024

SEGMENT_HEADER: Final = b"PXSPOOL\x01"
FRAME_MAGIC: Final = b"\xa9PXR"
_FRAME = struct.Struct("<4sIQQI")
_FRAME_FIELDS = struct.Struct("<IQQ")
_CRC = struct.Struct("<I")
FRAME_OVERHEAD: Final = _FRAME.size
_HEADER: Final = len(SEGMENT_HEADER)
_CURSOR = struct.Struct("<4sQ")
_CURSOR_MAGIC: Final = b"PXCR"
_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")

Buffer = bytes | mmap.mmap


class Record(NamedTuple):
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the spool found."""

    segments: int
    pending_records: int
    torn_tail_bytes: int  # cut from the end of the newest segment
    damaged_bytes: int  # inside the newest segment; the reader skips them


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class _Frame:
    seq: int
    appended_at_ms: int
    end: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Damage:
    start: int
    end: int


def frames_size(records: Sequence[bytes]) -> int:
    """The spool bytes ``records`` take once framed."""
    return sum(len(record) for record in records) + FRAME_OVERHEAD * len(records)


class Spool:
    """One directory of segments; opening it recovers from whatever a crash left behind."""

    def __init__(
        self,
        directory: Path | str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if segment_bytes < _HEADER + FRAME_OVERHEAD or max_bytes <= 0:
            raise ValueError("segment_bytes and max_bytes are too small")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.corrupt_bytes_skipped = 0
        self.records_lost = 0
        self._lock = threading.Lock()
        self._closed = False
        self._write_failed = False
        # After a failed fsync the kernel may have dropped the segment's unsynced pages and
        # marked them clean, so a later fsync would succeed over lost data (PostgreSQL's
        # lesson): the segment is suspect, nothing is appended or synced to it again, and
        # only resync() (a fresh segment, fsynced) clears it.
        self.suspect_from_seq: int | None = None  # first record that may have been lost
        self._synced_seq = 0  # every record up to here survived a successful fsync
        self._unacked: deque[tuple[int, int, int]] = deque()  # (seq, segment, end) of reads
        self._mapped: mmap.mmap | None = None
        self._mapped_segment = 0
        self._oldest: tuple[int, int] | None = None  # (committed seq, appended_at_ms)
        self._fd = -1
        _make_durable_directory(self.directory)
        self._lock_fd = _lock_directory(self.directory)
        try:
            self.recovery = self._open()
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            os.close(self._lock_fd)
            raise

    # -- opening -------------------------------------------------------------------------

    def _open(self) -> RecoveryReport:
        remove_temporaries(self.directory)  # of cursor writes; this process holds the lock
        (self.directory / "cursor.tmp").unlink(missing_ok=True)  # as earlier versions named it
        committed = self._read_cursor()
        segments = self._list_segments()
        while len(segments) > 1 and segments[1].first_seq - 1 <= committed:
            segments.pop(0).path.unlink()
        if not segments:
            segment, fd = self._create_segment(committed + 1)
            os.close(fd)  # reopened below like any newest segment
            segments.append(segment)
        # Everything before the oldest segment was committed before that segment was deleted.
        committed = max(committed, segments[0].first_seq - 1)
        self._segments = segments
        newest = segments[-1]
        self._fd, last_seq, torn, damaged = _recover_newest(newest)
        self._last_seq = max(last_seq, committed)
        self._committed_seq = self._read_seq = committed
        self._committed_pos = self._read_pos = self._locate(committed)
        report = RecoveryReport(len(segments), self._last_seq - committed, torn, damaged)
        if torn or damaged:
            log.warning(
                "spool %s: cut a torn tail of %d bytes and found %d damaged bytes in %s",
                self.directory, torn, damaged, newest.path.name,
            )
        log.info("spool %s: %d records pending", self.directory, report.pending_records)
        return report

    def _list_segments(self) -> list[_Segment]:
        segments = []
        for path in self.directory.iterdir():
            match = _SEGMENT_NAME.fullmatch(path.name)
            if match:
                segments.append(_Segment(int(match.group(1)), path, path.stat().st_size))
        return sorted(segments, key=lambda segment: segment.first_seq)

    def _read_cursor(self) -> int:
        path = self.directory / "cursor"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        body = data[: _CURSOR.size]
        if len(data) == _CURSOR.size + _CRC.size and _CRC.unpack(data[_CURSOR.size :])[0] == (
            zlib.crc32(body)
        ):
            magic, seq = _CURSOR.unpack(body)
            if magic == _CURSOR_MAGIC:
                return int(seq)
        log.warning("spool %s: cursor is damaged; every record on disk is delivered again", path)
        return 0

    def _locate(self, after_seq: int) -> tuple[int, int]:
        """The position just after record ``after_seq`` (or after the last record before it)."""
        candidates = [s for s in self._segments if s.first_seq <= after_seq + 1]
        segment = candidates[-1] if candidates else self._segments[0]
        position = _HEADER
        if segment.first_seq <= after_seq and segment.size > _HEADER:
            with _map_file(segment.path, segment.size) as buf:
                for item in _scan(buf, _HEADER, segment.size, segment.first_seq - 1):
                    if isinstance(item, _Frame):
                        if item.seq > after_seq:
                            break
                        position = item.end
        return segment.first_seq, position

    # -- writer side ---------------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> int:
        """Appends ``records`` with one write; returns the sequence number of the last one."""
        self._check_open()
        if not records:
            return self._last_seq
        for record in records:
            if len(record) > MAX_RECORD_BYTES:
                raise RecordTooLargeError(f"a record is at most {MAX_RECORD_BYTES} bytes")
        size = frames_size(records)
        with self._lock:
            pending = self._pending_bytes_locked()
            active = self._segments[-1]
        if pending + size > self.max_bytes:
            raise SpoolFullError(f"the spool holds {pending} of at most {self.max_bytes} bytes")
        if self.suspect_from_seq is not None:
            raise self._suspect_error(active)
        if self._write_failed:
            self._repair_tail(active)
        if active.size > _HEADER and active.size + size > self.segment_bytes:
            active = self._roll()
        first_seq = self._last_seq + 1
        data = _encode_frames(records, first_seq, time.time_ns() // 1_000_000)
        self._write_all(data, active)
        with self._lock:
            active.size += len(data)
            self._last_seq = first_seq + len(records) - 1
        return self._last_seq

    def fsync(self) -> None:
        """Makes every record appended before this call survive a machine crash.

        A failure makes the segment suspect (see :meth:`resync`); so does calling this while
        it is suspect, without trying the fsync again."""
        self._check_open()
        with self._lock:
            active = self._segments[-1]
            if self.suspect_from_seq is not None:
                raise self._suspect_error(active)
            fd = os.dup(self._fd)
            last = self._last_seq
        try:
            _sync_data(fd)
        except OSError as exc:
            with self._lock:
                self.suspect_from_seq = self._synced_seq + 1
            raise SpoolIOError(
                f"fsync of {active.path} failed: {exc.strerror}",
                path=str(active.path),
                errno=exc.errno,
            ) from exc
        finally:
            os.close(fd)
        with self._lock:
            self._synced_seq = max(self._synced_seq, last)

    def resync(self) -> tuple[int, int] | None:
        """Leaves a suspect segment for a fresh one, fsynced with the directory; returns the
        records that may have been lost with it (first, last), or None if none was suspect.

        The suspect segment's records stay readable (each frame is checked by its CRC)."""
        self._check_open()
        with self._lock:
            suspect = self.suspect_from_seq
        if suspect is None:
            self.fsync()
            return None
        try:
            segment, fd = self._create_segment(self._last_seq + 1)
            _sync_data(fd)
        except OSError as exc:
            raise SpoolIOError(
                f"cannot start a fresh segment in {self.directory}: {exc.strerror}",
                path=str(self.directory),
                errno=exc.errno,
            ) from exc
        with self._lock:
            old_fd, self._fd = self._fd, fd
            self._segments.append(segment)
            self.suspect_from_seq = None
            self._synced_seq = self._last_seq
            lost = (suspect, self._last_seq)
        os.close(old_fd)
        self._write_failed = False
        return lost if lost[0] <= lost[1] else None

    def _suspect_error(self, segment: _Segment) -> SpoolIOError:
        return SpoolIOError(
            f"{segment.path} is suspect after a failed fsync (records from "
            f"{self.suspect_from_seq} on); it takes a fresh segment",
            path=str(segment.path),
        )

    def _write_all(self, data: bytes, segment: _Segment) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._write_failed = True
            with contextlib.suppress(SpoolIOError):
                self._repair_tail(segment)
            raise SpoolIOError(
                f"cannot write to {segment.path}: {exc.strerror}",
                path=str(segment.path),
                errno=exc.errno,
            ) from exc

    def _repair_tail(self, segment: _Segment) -> None:
        """Cuts what a failed write left after the last whole frame."""
        try:
            os.ftruncate(self._fd, segment.size)
        except OSError as exc:
            raise SpoolIOError(
                f"cannot repair {segment.path}: {exc.strerror}",
                path=str(segment.path),
                errno=exc.errno,
            ) from exc
        self._write_failed = False

    def _roll(self) -> _Segment:
        try:
            try:
                _sync_data(self._fd)
            except OSError:
                with self._lock:
                    self.suspect_from_seq = self._synced_seq + 1
                raise
            self._synced_seq = self._last_seq
            segment, fd = self._create_segment(self._last_seq + 1)
        except OSError as exc:
            raise SpoolIOError(
                f"cannot start a new segment in {self.directory}: {exc.strerror}",
                path=str(self.directory),
                errno=exc.errno,
            ) from exc
        with self._lock:
            old_fd, self._fd = self._fd, fd
            self._segments.append(segment)
        os.close(old_fd)
        return segment

    def _create_segment(self, first_seq: int) -> tuple[_Segment, int]:
        path = self.directory / f"{first_seq:020d}.seg"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            os.write(fd, SEGMENT_HEADER)
            fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return _Segment(first_seq, path, _HEADER), fd

    # -- reader side ---------------------------------------------------------------------

    def read(self, max_records: int = 1000, max_bytes: int = 1 << 20) -> list[Record]:
        """The next records after the last one read, oldest first.

        Stops at ``max_records`` or before ``max_bytes`` of payload, but always returns at
        least one record when there is one.
        """
        self._check_open()
        if max_records <= 0 or max_bytes <= 0:
            raise ValueError("max_records and max_bytes must be positive")
        records: list[Record] = []
        budget = [max_records, max_bytes]
        while True:
            with self._lock:
                index = self._segment_index(self._read_pos[0])
                segment = self._segments[index]
                is_newest = index == len(self._segments) - 1
                last_seq = self._last_seq
                limit = segment.size
                if self._read_pos[0] != segment.first_seq:
                    self._read_pos = (segment.first_seq, _HEADER)
            if self._read_pos[1] < limit:
                if not self._read_segment(segment, limit, records, budget):
                    return records
            elif is_newest:
                self._note_missing(last_seq, segment)
                return records
            else:
                following = self._segments[index + 1]
                self._note_missing(following.first_seq - 1, segment)
                self._read_pos = (following.first_seq, _HEADER)

    def _read_segment(
        self, segment: _Segment, limit: int, records: list[Record], budget: list[int]
    ) -> bool:
        """Reads frames up to ``limit``; False when the budget ran out first."""
        buf = self._map(segment, limit)
        for item in _scan(buf, self._read_pos[1], limit, self._read_seq):
            if isinstance(item, _Damage):
                self.corrupt_bytes_skipped += item.end - item.start
                log.warning(
                    "spool: skipped %d damaged bytes at %d in %s",
                    item.end - item.start, item.start, segment.path.name,
                )
                self._read_pos = (segment.first_seq, item.end)
                continue
            if budget[0] == 0 or (records and len(item.payload) > budget[1]):
                return False
            self._note_missing(item.seq - 1, segment)
            records.append(Record(item.seq, item.payload))
            budget[0] -= 1
            budget[1] -= len(item.payload)
            self._read_seq = item.seq
            self._read_pos = (segment.first_seq, item.end)
            self._unacked.append((item.seq, segment.first_seq, item.end))
        return True

    def _note_missing(self, up_to_seq: int, segment: _Segment) -> None:
        if up_to_seq > self._read_seq:
            missing = up_to_seq - self._read_seq
            self.records_lost += missing
            log.warning(
                "spool: records %d..%d are missing from %s",
                self._read_seq + 1, up_to_seq, segment.path.name,
            )
            self._read_seq = up_to_seq

    def commit(self, seq: int) -> None:
        """Marks every record up to ``seq`` as published and deletes consumed segments.

        The new cursor is fsynced before it replaces the old one, so a crash leaves one or
        the other, never a broken one; the old one only means records are delivered again.
        This costs an fsync: commit once per acknowledged batch, not per record.
        """
        self._check_open()
        if seq <= self._committed_seq:
            return
        if seq > self._read_seq:
            raise ValueError(f"record {seq} was not read yet")
        done = 0
        position = self._committed_pos
        for entry in self._unacked:
            if entry[0] > seq:
                break
            done += 1
            position = (entry[1], entry[2])
        if seq == self._read_seq:
            position = self._read_pos
        self._write_cursor(seq)
        for _ in range(done):
            self._unacked.popleft()
        with self._lock:
            self._committed_seq = seq
            self._committed_pos = position
            consumed = []
            while len(self._segments) > 1 and self._segments[1].first_seq - 1 <= seq:
                consumed.append(self._segments.pop(0))
            if consumed and position[0] < self._segments[0].first_seq:
                self._committed_pos = (self._segments[0].first_seq, _HEADER)
        for segment in consumed:
            if self._mapped_segment == segment.first_seq:
                self._unmap()
            segment.path.unlink(missing_ok=True)

    def rewind(self) -> None:
        """Makes the next read start again after the last committed record."""
        self._read_seq = self._committed_seq
        self._read_pos = self._committed_pos
        self._unacked.clear()

    def _write_cursor(self, seq: int) -> None:
        body = _CURSOR.pack(_CURSOR_MAGIC, seq)
        try:
            # No fsync of the directory: after a crash the old cursor is as good as the new
            # (records are delivered again), and one fsync per commit is what it costs.
            atomic_write_bytes(
                self.directory / "cursor", body + _CRC.pack(zlib.crc32(body)), sync_directory=False
            )
        except OSError as exc:
            raise SpoolIOError(f"cannot write the spool cursor: {exc.strerror}") from exc

    def _segment_index(self, first_seq: int) -> int:
        for index, segment in enumerate(self._segments):
            if segment.first_seq == first_seq:
                return index
        return 0  # the segment was consumed and deleted: continue with the oldest one

    def _map(self, segment: _Segment, limit: int) -> mmap.mmap:
        if (
            self._mapped is None
            or self._mapped_segment != segment.first_seq
            or len(self._mapped) < limit
        ):
            self._unmap()
            with open(segment.path, "rb") as file:
                self._mapped = mmap.mmap(file.fileno(), limit, access=mmap.ACCESS_READ)
            self._mapped_segment = segment.first_seq
        return self._mapped

    def _unmap(self) -> None:
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None

    # -- state ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def committed_seq(self) -> int:
        return self._committed_seq

    @property
    def has_unread(self) -> bool:
        return self._read_seq < self._last_seq

    @property
    def pending_records(self) -> int:
        """Records appended and not committed (lost records in between count too)."""
        return self._last_seq - self._committed_seq

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._pending_bytes_locked()

    @property
    def free_bytes(self) -> int:
        return max(0, self.max_bytes - self.pending_bytes)

    @property
    def oldest_pending_age_s(self) -> float:
        """How long ago the oldest uncommitted record was appended; 0.0 when there is none."""
        committed = self._committed_seq
        if self._closed or self._last_seq <= committed:
            return 0.0
        if self._oldest is None or self._oldest[0] != committed:
            appended_at_ms = self._first_pending_append_ms()
            if appended_at_ms is None:
                return 0.0
            self._oldest = (committed, appended_at_ms)
        return max(0.0, time.time() - self._oldest[1] / 1000)

    def _first_pending_append_ms(self) -> int | None:
        with self._lock:
            (first_seq, offset), after_seq = self._committed_pos, self._committed_seq
            segments = [(s.path, s.size, s.first_seq) for s in self._segments]
        for path, size, segment_first_seq in segments:
            start = offset if segment_first_seq == first_seq else _HEADER
            if segment_first_seq < first_seq or start >= size:
                continue
            with contextlib.suppress(OSError), _map_file(path, size) as buf:
                for item in _scan(buf, start, size, after_seq):
                    if isinstance(item, _Frame):
                        return item.appended_at_ms
        return None

    def _pending_bytes_locked(self) -> int:
        total = sum(max(0, segment.size - _HEADER) for segment in self._segments)
        first_seq, offset = self._committed_pos
        if self._segments[0].first_seq == first_seq:
            total -= offset - _HEADER
        return total

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the files; does not fsync (call :meth:`fsync` first for that)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            os.close(self._fd)
        self._unmap()
        os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolClosedError(f"the spool {self.directory} is closed")

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _recover_newest(segment: _Segment) -> tuple[int, int, int, int]:
    """Opens the newest segment for appending: (fd, last seq, torn bytes, damaged bytes)."""
    fd = os.open(segment.path, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        last_seq, good_end, torn, damaged = segment.first_seq - 1, _HEADER, 0, 0
        if size < _HEADER:
            torn = size
            os.ftruncate(fd, 0)
            os.write(fd, SEGMENT_HEADER)
        else:
            if os.pread(fd, _HEADER, 0) != SEGMENT_HEADER:
                damaged += _HEADER
            if size > _HEADER:
                with _map_file(segment.path, size) as buf:
                    for item in _scan(buf, _HEADER, size, last_seq):
                        if isinstance(item, _Frame):
                            last_seq, good_end = item.seq, item.end
                        elif item.end == size:
                            torn = size - item.start
                        else:
                            damaged += item.end - item.start
            if torn:
                os.ftruncate(fd, good_end)
        segment.size = os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise
    return fd, last_seq, torn, damaged


def _encode_frames(records: Sequence[bytes], first_seq: int, appended_at_ms: int) -> bytes:
    parts: list[bytes] = []
    for seq, payload in enumerate(records, first_seq):
        fields = _FRAME_FIELDS.pack(len(payload), seq, appended_at_ms)
        parts += (FRAME_MAGIC, fields, _CRC.pack(zlib.crc32(payload, zlib.crc32(fields))), payload)
    return b"".join(parts)


def _frame_at(buf: Buffer, pos: int, end: int, after_seq: int) -> _Frame | None:
    if end - pos < FRAME_OVERHEAD:
        return None
    magic, length, seq, appended_at_ms, crc = _FRAME.unpack_from(buf, pos)
    frame_end = pos + FRAME_OVERHEAD + length
    if magic != FRAME_MAGIC or length > MAX_RECORD_BYTES or frame_end > end or seq <= after_seq:
        return None
    payload = buf[pos + FRAME_OVERHEAD : frame_end]
    if zlib.crc32(payload, zlib.crc32(buf[pos + 4 : pos + 24])) != crc:
        return None
    return _Frame(seq, appended_at_ms, frame_end, payload)


def _scan(buf: Buffer, pos: int, end: int, after_seq: int) -> Iterator[_Frame | _Damage]:
    """Valid frames with rising sequence numbers, and the damaged stretches between them."""
    while pos < end:
        frame = _frame_at(buf, pos, end, after_seq)
        if frame is not None:
            yield frame
            after_seq, pos = frame.seq, frame.end
            continue
        start, pos = pos, pos + 1
        while (pos := buf.find(FRAME_MAGIC, pos, end)) >= 0:
            if _frame_at(buf, pos, end, after_seq) is not None:
                break
            pos += 1
        else:
            pos = end
        yield _Damage(start, pos)


@contextlib.contextmanager
def _map_file(path: Path, size: int) -> Iterator[mmap.mmap]:
    with open(path, "rb") as file, mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as buf:
        yield buf


def _make_durable_directory(directory: Path) -> None:
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for created in missing:
        fsync_directory(created.parent)


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLockedError(f"another process holds the spool {directory}") from None
    return fd


def _sync_data(fd: int) -> None:
    if sys.platform == "darwin":
        os.fsync(fd)
    else:
        os.fdatasync(fd)
