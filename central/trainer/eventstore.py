"""The trainer's recent event log, kept on disk so that a restart does not start from zero.

Only item events (view, click, cart and purchase events naming an item) are kept: they are
what the trainer learns from; other events are counted and let go. An event is kept once
per ``event_id`` (the path from the edge is at-least-once). Two bounds hold the log to what
is worth learning from: events older than ``max_age_ms`` before the newest kept event are
dropped, and beyond ``max_events`` the oldest are dropped. Events more than
``max_future_ms`` ahead of the clock are refused, so one wrong client clock cannot age
everything else out.

On disk (formats in :mod:`central.trainer.eventfiles`), in the store's directory:

``snapshot.bin``
    Every kept event as columns, with the Kafka offsets and the generation ``g``; written
    whole (temporary file, fsync, rename, fsync of the directory).
``journal-<g>.log``
    What was added since snapshot ``g``: one checksummed record per :meth:`EventStore.flush`.
    Only the last record can be torn by a crash; opening cuts the file back before it.

Offsets travel in the same record (or snapshot) as the events consumed up to them, so the
offsets the store reports are never ahead of the events it holds. Events are told apart by
a 64-bit hash of their id (a collision among two million events has odds of about 1e-7).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

import numpy as np
import numpy.typing as npt

from central.eventlog import Codes, EventLog, Row
from central.trainer.eventfiles import (
    Snapshot,
    decode_snapshot,
    encode_record,
    encode_snapshot,
    read_journal,
)
from central.trainer.eventrows import contains, row_of, within_bounds
from protocol.events import ITEM_EVENT_TYPES, Event
from runtime.files import atomic_write_bytes, fsync_directory, remove_temporaries

DAY_MS: Final = 86_400_000
SNAPSHOT_NAME: Final = "snapshot.bin"
_CONSOLIDATE_AFTER: Final = 50_000  # pending rows merged into the columns beyond this

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    max_events: int = 2_000_000
    max_age_ms: int = 30 * DAY_MS
    max_future_ms: int = DAY_MS
    snapshot_after_rows: int = 500_000  # journal rows that make the next flush a snapshot

    def __post_init__(self) -> None:
        for name in ("max_events", "max_age_ms", "max_future_ms", "snapshot_after_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(slots=True)
class StoreCounters:
    """What became of the events offered since the store was opened."""

    added: int = 0
    duplicates: int = 0
    ignored: int = 0  # not item events
    too_old: int = 0
    from_future: int = 0
    evicted: int = 0  # kept once, later dropped by the bounds
    torn_bytes: int = 0  # cut from the journal's tail on opening


class EventStore:
    """Open with :meth:`open`; :meth:`add`, :meth:`flush`, read with :meth:`columns` or
    :meth:`to_eventlog`."""

    def __init__(self, directory: Path, limits: StoreLimits, clock: Callable[[], float]) -> None:
        self.directory = directory
        self.limits = limits
        self.counters = StoreCounters()
        self.sequence = 0  # events ever kept: one more per new event, survives restarts
        self._clock = clock
        self._columns = EventLog.empty()  # in arrival order
        self._index: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)  # sorted keys
        self._codes: Codes = ({}, {}, {})
        self._pending: list[Row] = []  # kept, not yet merged into the columns
        self._pending_keys: set[int] = set()
        self._unflushed: list[Row] = []  # kept, not yet in the journal
        self._offsets: dict[str, int] = {}
        self._offsets_dirty = False
        self._newest_ts: int | None = None
        self._generation = 0
        self._journal_rows = 0
        self._journal: BinaryIO | None = None

    @classmethod
    def open(
        cls,
        directory: Path | str,
        limits: StoreLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> EventStore:
        store = cls(Path(directory), limits or StoreLimits(), clock)
        store._load()
        return store

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self.columns().n_events

    @property
    def offsets(self) -> dict[str, int]:
        """``"<topic>:<partition>"`` → the next offset to consume, as of the events held."""
        return dict(self._offsets)

    @property
    def newest_ts(self) -> int | None:
        return self._newest_ts

    def add(self, events: Iterable[Event], offsets: Mapping[str, int] | None = None) -> int:
        """Keeps the new item events and returns how many; durable after :meth:`flush`.

        ``offsets`` are the consumer's positions just past ``events``.
        """
        latest_allowed = int(self._clock() * 1000) + self.limits.max_future_ms
        rows: list[Row] = []
        for event in events:
            if event.type not in ITEM_EVENT_TYPES or event.item_id is None:
                self.counters.ignored += 1
            elif event.ts > latest_allowed:
                self.counters.from_future += 1
            else:
                rows.append(row_of(event))
        kept = self._take(rows)
        self._unflushed.extend(kept)
        self.sequence += len(kept)
        self.counters.added += len(kept)
        if offsets:
            self._offsets.update(offsets)
            self._offsets_dirty = True
        if len(self._pending) >= _CONSOLIDATE_AFTER:
            self._consolidate()
        return len(kept)

    def flush(self) -> None:
        """Makes everything added so far durable: one fsynced journal record (or a snapshot,
        once the journal holds ``snapshot_after_rows`` rows)."""
        if not self._unflushed and not self._offsets_dirty:
            return
        if self._journal_rows + len(self._unflushed) >= self.limits.snapshot_after_rows:
            self.snapshot()
            return
        journal = self._open_journal()
        journal.write(encode_record(self._unflushed, self._offsets, self.sequence))
        journal.flush()
        os.fsync(journal.fileno())
        self._journal_rows += len(self._unflushed)
        self._unflushed.clear()
        self._offsets_dirty = False

    def snapshot(self) -> None:
        """Writes every kept event into a new snapshot and starts an empty journal."""
        self._consolidate(compact_vocabularies=True)
        generation = self._generation + 1
        atomic_write_bytes(
            self.directory / SNAPSHOT_NAME,
            encode_snapshot(Snapshot(self._columns, self._offsets, self.sequence, generation)),
        )
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        previous = self._journal_path(self._generation)
        self._generation = generation
        self._journal_rows = 0
        self._unflushed.clear()
        self._offsets_dirty = False
        self._open_journal()
        previous.unlink(missing_ok=True)

    def columns(self) -> EventLog:
        """The kept events as of now in arrival order, bounds applied; later additions leave
        it unchanged (see :mod:`central.eventlog`)."""
        self._consolidate()
        return self._columns

    def to_eventlog(self) -> EventLog:
        """The kept events as trainer and evaluator read them: :func:`trainer_log`."""
        return trainer_log(self.columns())

    def close(self) -> None:
        self.flush()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.directory)
        snapshot_path = self.directory / SNAPSHOT_NAME
        if snapshot_path.exists():
            snapshot = decode_snapshot(snapshot_path.read_bytes(), snapshot_path)
            self._columns = snapshot.columns
            self._offsets = snapshot.offsets
            self.sequence = snapshot.sequence
            self._generation = snapshot.generation
            self._codes = snapshot.columns.codes()
            self._index = np.sort(snapshot.columns.key)
            if snapshot.columns.n_events:
                self._newest_ts = int(snapshot.columns.ts.max())
        current = self._journal_path(self._generation)
        for journal in self.directory.glob("journal-*.log"):
            if journal != current:
                journal.unlink()  # left by a crash between a snapshot and its new journal
        if current.exists():
            self._replay(current)
        self._consolidate(force=True)  # the limits may be tighter than when it was written

    def _replay(self, path: Path) -> None:
        data = path.read_bytes()
        good = 0
        for record in read_journal(data, path):
            self._take(record.rows)
            self._offsets = record.offsets
            self.sequence = record.sequence
            self._journal_rows += len(record.rows)
            good = record.end
        if good < len(data):
            self.counters.torn_bytes = len(data) - good
            log.warning("%s: cut a torn last record (%d bytes)", path, len(data) - good)
            with path.open("r+b") as journal:
                journal.truncate(good)
                os.fsync(journal.fileno())

    def _take(self, rows: list[Row]) -> list[Row]:
        """Keeps the rows neither seen before nor too old; returns them."""
        if not rows:
            return []
        keys = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        kept: list[Row] = []
        for row, seen in zip(rows, contains(self._index, keys), strict=True):
            if seen or row[0] in self._pending_keys:
                self.counters.duplicates += 1
            elif self._newest_ts is not None and row[3] < self._newest_ts - self.limits.max_age_ms:
                self.counters.too_old += 1
            else:
                kept.append(row)
                self._pending_keys.add(row[0])
                if self._newest_ts is None or row[3] > self._newest_ts:
                    self._newest_ts = row[3]
        self._pending.extend(kept)
        return kept

    def _consolidate(self, *, force: bool = False, compact_vocabularies: bool = False) -> None:
        """Merges the pending rows into the columns and applies the bounds."""
        if not (self._pending or force or compact_vocabularies):
            return
        columns = self._columns
        if self._pending:
            columns = columns.appended(self._pending, self._codes)
            self._pending.clear()
            self._pending_keys.clear()
        keep = within_bounds(columns, self.limits.max_age_ms, self.limits.max_events)
        if not keep.all():
            self.counters.evicted += int((~keep).sum())
            columns = columns.select(keep)
        if compact_vocabularies:
            columns = columns.compacted()
            self._codes = columns.codes()
        self._columns = columns
        self._index = np.sort(columns.key)

    def _journal_path(self, generation: int) -> Path:
        return self.directory / f"journal-{generation}.log"

    def _open_journal(self) -> BinaryIO:
        if self._journal is None:
            path = self._journal_path(self._generation)
            created = not path.exists()
            self._journal = path.open("ab")
            if created:
                fsync_directory(self.directory)
        return self._journal


def trainer_log(columns: EventLog) -> EventLog:
    """The store's columns grouped by session, rows first put in order of time (then key),
    so the same events give the same log whichever order they arrived in."""
    return columns.by_time().by_session()
