"""A columnar, in-memory event log: what the trainer and the evaluator work on.

Rows are sorted by session, then timestamp, then original order. Strings are held once in
vocabularies; the arrays hold codes into them. Event types are coded by their position in
:data:`protocol.events.EVENT_TYPES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocol.events import EVENT_TYPES, Event

IntArray = npt.NDArray[np.int32]
TimeArray = npt.NDArray[np.int64]
TypeArray = npt.NDArray[np.int8]
PriceArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class EventLog:
    session_ids: list[str]
    item_ids: list[str]
    categories: list[str]
    session: IntArray
    item: IntArray
    ts: TimeArray
    event_type: TypeArray
    category: IntArray  # -1 where unknown
    price: PriceArray  # NaN where unknown

    @property
    def n_events(self) -> int:
        return int(self.item.shape[0])

    def session_bounds(self) -> npt.NDArray[np.int64]:
        """Start offsets of each run of one session, plus the end: ``len = runs + 1``."""
        if self.n_events == 0:
            return np.zeros(1, dtype=np.int64)
        change = np.flatnonzero(self.session[1:] != self.session[:-1]) + 1
        return np.concatenate(([0], change, [self.n_events])).astype(np.int64)

    def select(self, mask: npt.NDArray[np.bool_]) -> EventLog:
        """The rows where ``mask`` is true, with the same vocabularies (order kept)."""
        return EventLog(
            session_ids=self.session_ids,
            item_ids=self.item_ids,
            categories=self.categories,
            session=self.session[mask],
            item=self.item[mask],
            ts=self.ts[mask],
            event_type=self.event_type[mask],
            category=self.category[mask],
            price=self.price[mask],
        )

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


def build_log(
    session_keys: list[str],
    item_keys: list[str],
    ts: list[int],
    event_types: list[int],
    categories: list[str | None],
    prices: list[float | None],
) -> EventLog:
    """Builds a sorted :class:`EventLog` from parallel row lists (strings, not codes)."""
    session_codes, session_vocab = _encode(session_keys)
    item_codes, item_vocab = _encode(item_keys)
    category_codes, category_vocab = _encode_optional(categories)
    ts_arr = np.asarray(ts, dtype=np.int64)
    order = np.lexsort((np.arange(len(ts_arr)), ts_arr, session_codes))
    price_arr = np.array([np.nan if p is None else p for p in prices], dtype=np.float32)
    return EventLog(
        session_ids=session_vocab,
        item_ids=item_vocab,
        categories=category_vocab,
        session=session_codes[order],
        item=item_codes[order],
        ts=ts_arr[order],
        event_type=np.asarray(event_types, dtype=np.int8)[order],
        category=category_codes[order],
        price=price_arr[order],
    )


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
