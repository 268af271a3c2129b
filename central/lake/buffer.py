"""What a lake writer holds of one Kafka partition before committing it: rows by event day.

A :class:`PartitionBuffer` receives the partition's records in offset order: a decoded
event becomes a row of its day's columns, an invalid record only moves the range on. The
range ``[first, last]`` is every offset received since the last commit, valid or not, and
is what the next commit covers (:mod:`central.lake.names`): all of a commit's days are
committed together, so the lake's high-water mark of the partition never passes a row it
does not hold.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa

from central.lake.layout import event_date
from central.lake.tables import event_types, table_from_columns
from protocol.events import EVENT_TYPE_CODES, Event

_DAY_MS: Final = 86_400_000
_STRING_FIELDS: Final = (
    "event_id", "session_id", "user_id", "item_id", "request_id", "query", "category",
    "region", "node",
)  # fmt: skip


@dataclass(slots=True)
class _DayColumns:
    strings: dict[str, list[str | None]] = field(
        default_factory=lambda: {name: [] for name in _STRING_FIELDS}
    )
    types: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    items: list[list[str] | None] = field(default_factory=list)
    price: list[float | None] = field(default_factory=list)
    context: list[str | None] = field(default_factory=list)
    received_at: list[int | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def add(self, event: Event, offset: int) -> None:
        strings = self.strings
        for name in _STRING_FIELDS:
            strings[name].append(getattr(event, name))
        self.types.append(EVENT_TYPE_CODES[event.type])
        self.ts.append(event.ts)
        self.items.append(None if event.items is None else list(event.items))
        self.price.append(event.price)
        self.context.append(
            None
            if event.context is None
            else json.dumps(dict(event.context), separators=(",", ":"), ensure_ascii=False)
        )
        self.received_at.append(event.received_at)
        self.offsets.append(offset)

    def table(self, partition: int) -> pa.Table:
        rows = len(self.offsets)
        columns: dict[str, Any] = dict(self.strings)
        columns.update(
            type=event_types(pa.array(self.types, pa.int8())),
            ts=self.ts, items=self.items, price=self.price, context=self.context,
            received_at=self.received_at, kafka_offset=self.offsets,
            kafka_partition=pa.array([partition] * rows, pa.int32()),
        )  # fmt: skip
        return table_from_columns(columns, rows)


class PartitionBuffer:
    """Rows of one partition since its last commit; ``next_offset`` is where it reads on."""

    def __init__(self, partition: int, next_offset: int, *, clock: Any = time.monotonic) -> None:
        self.partition = partition
        self.next_offset = next_offset
        self.first: int | None = None  # the first offset received since the last commit
        self.bytes = 0  # encoded size of the events held
        self.rows = 0
        self.opened_at: float | None = None
        self._clock = clock
        self._days: dict[str, _DayColumns] = {}
        self._date_of_day: dict[int, str] = {}

    @property
    def last(self) -> int:
        return self.next_offset - 1

    @property
    def pending(self) -> bool:
        """Offsets received and not committed (rows, or invalid records only)."""
        return self.first is not None

    def add(self, event: Event, offset: int, size: int) -> None:
        self._advance(offset)
        day = event.ts // _DAY_MS
        date = self._date_of_day.get(day)
        if date is None:
            date = self._date_of_day[day] = event_date(event.ts)
        columns = self._days.get(date)
        if columns is None:
            columns = self._days[date] = _DayColumns()
        columns.add(event, offset)
        self.bytes += size
        self.rows += 1

    def skip(self, offset: int) -> None:
        """An offset whose record is not an event: covered by the next commit, no row."""
        self._advance(offset)

    def age_s(self) -> float:
        return 0.0 if self.opened_at is None else self._clock() - self.opened_at

    def tables(self) -> dict[str, pa.Table]:
        """The held rows by event date, oldest date first."""
        return {date: self._days[date].table(self.partition) for date in sorted(self._days)}

    def committed(self) -> None:
        """Everything held is in the lake now: start the next commit's range."""
        self.first = None
        self.bytes = self.rows = 0
        self.opened_at = None
        self._days = {}

    def _advance(self, offset: int) -> None:
        if self.first is None:
            self.first = offset
            self.opened_at = self._clock()
        self.next_offset = offset + 1
