"""The columnar event log: what the trainer's store keeps and what trainer and evaluator read.

Strings are held once in vocabularies; the columns (:data:`COLUMNS`) hold codes into them.
Event types are coded by their position in :data:`protocol.events.EVENT_TYPES`; ``key``
tells events apart (the hash of the event id in the trainer's store, the row number in a
file read by :mod:`central.datasets`).

Row order is the log's business: trainer and evaluator read a log grouped by session
(:meth:`EventLog.by_session`, which :func:`build_log` returns), while the trainer's store
keeps one in arrival order and appends to it (:meth:`EventLog.appended`).

An :class:`EventLog` never changes. Its arrays are never written to; its vocabulary lists
are only ever appended to, by :meth:`~EventLog.appended` when it makes a longer log, so an
older log's codes stay valid: the trainer can read one in a worker thread while the
consumer goes on appending. Every other method that re-codes makes new lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from protocol.events import EVENT_TYPES, Event

# Column name → dtype. Files hold the columns little-endian (``<i8`` and so on).
COLUMNS: Final[dict[str, type[np.generic]]] = {
    "key": np.int64,
    "session": np.int32,
    "item": np.int32,
    "ts": np.int64,
    "event_type": np.int8,
    "category": np.int32,
    "price": np.float32,
}

IntArray = npt.NDArray[np.int32]
KeyArray = npt.NDArray[np.int64]
TimeArray = npt.NDArray[np.int64]
TypeArray = npt.NDArray[np.int8]
PriceArray = npt.NDArray[np.float32]
Rows = npt.NDArray[np.bool_] | npt.NDArray[np.intp]  # a mask, or row numbers

# One event with strings, not codes: key, session_id, item_id, ts, type code, category, price
Row = tuple[int, str, str, int, int, str | None, float | None]
# String → code, for the vocabularies of sessions, items and categories
Codes = tuple[dict[str, int], dict[str, int], dict[str, int]]


@dataclass(frozen=True, slots=True)
class EventLog:
    session_ids: list[str]
    item_ids: list[str]
    categories: list[str]
    key: KeyArray
    session: IntArray
    item: IntArray
    ts: TimeArray
    event_type: TypeArray
    category: IntArray  # -1 where unknown
    price: PriceArray  # NaN where unknown

    @classmethod
    def empty(cls) -> EventLog:
        columns = {name: np.zeros(0, dtype=dtype) for name, dtype in COLUMNS.items()}
        return cls(session_ids=[], item_ids=[], categories=[], **columns)

    @property
    def n_events(self) -> int:
        return int(self.key.shape[0])

    def session_bounds(self) -> npt.NDArray[np.int64]:
        """Start offsets of each run of one session, plus the end: ``len = runs + 1``."""
        if self.n_events == 0:
            return np.zeros(1, dtype=np.int64)
        change = np.flatnonzero(self.session[1:] != self.session[:-1]) + 1
        return np.concatenate(([0], change, [self.n_events])).astype(np.int64)

    def select(self, rows: Rows) -> EventLog:
        """The rows a mask marks (in order), or the rows numbered, with the same vocabularies."""
        columns: dict[str, Any] = {name: getattr(self, name)[rows] for name in COLUMNS}
        return replace(self, **columns)

    def event(self, row: int) -> Event:
        """Row ``row`` as a protocol event (for replay through the session window)."""
        category = int(self.category[row])
        price = float(self.price[row])
        return Event(
            event_id=f"log-{row:08d}",
            session_id=self.session_ids[int(self.session[row])],
            type=EVENT_TYPES[int(self.event_type[row])],
            item_id=self.item_ids[int(self.item[row])],
            ts=int(self.ts[row]),
            category=self.categories[category] if category >= 0 else None,
            price=None if np.isnan(price) else price,
        )

    def events(self, start: int, stop: int) -> Iterator[Event]:
        for row in range(start, stop):
            yield self.event(row)

    def by_time(self) -> EventLog:
        """The rows by time, ties by key: one order whatever order the events came in."""
        return self.select(np.lexsort((self.key, self.ts)))

    def by_session(self) -> EventLog:
        """The rows grouped by session, sessions in the order they first appear here, each
        session's rows by time (ties as here); what trainer and evaluator read.

        The vocabularies are new lists of the strings in use, in the order they first
        appear here, so the same rows in the same order give the same log.
        """
        session, session_ids = _recoded(self.session, self.session_ids)
        item, item_ids = _recoded(self.item, self.item_ids)
        category, categories = _recoded(self.category, self.categories)
        order = np.lexsort((np.arange(self.n_events), self.ts, session))
        return EventLog(
            session_ids=session_ids,
            item_ids=item_ids,
            categories=categories,
            key=self.key[order],
            session=session[order],
            item=item[order],
            ts=self.ts[order],
            event_type=self.event_type[order],
            category=category[order],
            price=self.price[order],
        )

    def codes(self) -> Codes:
        """The vocabularies as string → code, for :meth:`appended`."""
        return (
            {value: code for code, value in enumerate(self.session_ids)},
            {value: code for code, value in enumerate(self.item_ids)},
            {value: code for code, value in enumerate(self.categories)},
        )

    def appended(self, rows: list[Row], codes: Codes) -> EventLog:
        """This log with ``rows`` after its own. ``codes`` index this log's vocabularies and
        learn the new strings, which are appended to the vocabulary lists."""
        session_codes, item_codes, category_codes = codes

        def code(value: str, index: dict[str, int], vocabulary: list[str]) -> int:
            found = index.get(value)
            if found is None:
                found = index[value] = len(vocabulary)
                vocabulary.append(value)
            return found

        sessions, items, categories = self.session_ids, self.item_ids, self.categories
        n = len(rows)
        new: dict[str, npt.NDArray[Any]] = {
            "key": np.fromiter((r[0] for r in rows), np.int64, n),
            "session": np.fromiter(
                (code(r[1], session_codes, sessions) for r in rows), np.int32, n
            ),
            "item": np.fromiter((code(r[2], item_codes, items) for r in rows), np.int32, n),
            "ts": np.fromiter((r[3] for r in rows), np.int64, n),
            "event_type": np.fromiter((r[4] for r in rows), np.int8, n),
            "category": np.fromiter(
                (-1 if r[5] is None else code(r[5], category_codes, categories) for r in rows),
                np.int32,
                n,
            ),
            "price": np.fromiter((np.nan if r[6] is None else r[6] for r in rows), np.float32, n),
        }
        columns: dict[str, Any] = {
            name: np.concatenate((getattr(self, name), new[name])) for name in COLUMNS
        }
        return replace(self, **columns)

    def compacted(self) -> EventLog:
        """The same rows, the vocabularies without the strings no row uses (in new lists)."""
        used_sessions, session = np.unique(self.session, return_inverse=True)
        used_items, item = np.unique(self.item, return_inverse=True)
        known = self.category >= 0
        used_categories, known_category = np.unique(self.category[known], return_inverse=True)
        category = np.full(self.n_events, -1, dtype=np.int32)
        category[known] = known_category
        return replace(
            self,
            session_ids=[self.session_ids[i] for i in used_sessions.tolist()],
            item_ids=[self.item_ids[i] for i in used_items.tolist()],
            categories=[self.categories[i] for i in used_categories.tolist()],
            session=session.astype(np.int32),
            item=item.astype(np.int32),
            category=category,
        )


def build_log(
    session_keys: list[str],
    item_keys: list[str],
    ts: list[int],
    event_types: list[int],
    categories: list[str | None],
    prices: list[float | None],
) -> EventLog:
    """A log grouped by session (:meth:`EventLog.by_session`) from parallel row lists of
    strings, not codes; ``key`` is each row's position in the lists."""
    session_codes, session_vocab = _encode(session_keys)
    item_codes, item_vocab = _encode(item_keys)
    category_codes, category_vocab = _encode_optional(categories)
    return EventLog(
        session_ids=session_vocab,
        item_ids=item_vocab,
        categories=category_vocab,
        key=np.arange(len(session_keys), dtype=np.int64),
        session=session_codes,
        item=item_codes,
        ts=np.asarray(ts, dtype=np.int64),
        event_type=np.asarray(event_types, dtype=np.int8),
        category=category_codes,
        price=np.array([np.nan if p is None else p for p in prices], dtype=np.float32),
    ).by_session()


def _encode(keys: list[str]) -> tuple[IntArray, list[str]]:
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(k, len(index)) for k in keys), dtype=np.int32, count=len(keys)
    )
    return codes, list(index)


def _encode_optional(keys: list[str | None]) -> tuple[IntArray, list[str]]:
    index: dict[str, int] = {}
    codes = np.fromiter(
        (-1 if k is None else index.setdefault(k, len(index)) for k in keys),
        dtype=np.int32,
        count=len(keys),
    )
    return codes, list(index)


def _recoded(codes: IntArray, vocabulary: list[str]) -> tuple[IntArray, list[str]]:
    """``codes`` renumbered in the order they first appear (-1 stays -1), and the strings
    they now index."""
    known = codes >= 0
    used, first = np.unique(codes[known], return_index=True)
    used = used[np.argsort(first)]
    renumbered = np.zeros(len(vocabulary), dtype=np.int32)
    renumbered[used] = np.arange(used.shape[0], dtype=np.int32)
    out = np.full(codes.shape[0], -1, dtype=np.int32)
    out[known] = renumbered[codes[known]]
    return out, [vocabulary[code] for code in used.tolist()]
