"""The trainer's kept events as columns: strings coded into vocabularies, numbers in numpy.

:class:`StoredEvents` is immutable, so the trainer can build its :class:`EventLog` from one
in a worker thread while the consumer goes on adding to the store. Appending to it makes
new arrays and only ever appends to the vocabulary lists, so an older instance stays valid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from central.eventlog import EventLog, build_log
from protocol.events import EVENT_TYPE_CODES, Event

# Column name → dtype as stored on disk (little-endian).
COLUMNS: Final = {
    "key": "<i8",
    "session": "<i4",
    "item": "<i4",
    "ts": "<i8",
    "event_type": "|i1",
    "category": "<i4",
    "price": "<f4",
}

# key (hash of event_id), session_id, item_id, ts, type code, category, price
Row = tuple[int, str, str, int, int, str | None, float | None]
Codes = tuple[dict[str, int], dict[str, int], dict[str, int]]  # sessions, items, categories
Scalar = TypeVar("Scalar", bound=np.generic)


@dataclass(frozen=True, slots=True)
class StoredEvents:
    session_ids: list[str]
    item_ids: list[str]
    categories: list[str]
    key: npt.NDArray[np.int64]
    session: npt.NDArray[np.int32]
    item: npt.NDArray[np.int32]
    ts: npt.NDArray[np.int64]
    event_type: npt.NDArray[np.int8]
    category: npt.NDArray[np.int32]  # -1 where unknown
    price: npt.NDArray[np.float32]  # NaN where unknown

    @classmethod
    def empty(cls) -> StoredEvents:
        return cls(
            session_ids=[],
            item_ids=[],
            categories=[],
            key=np.zeros(0, dtype=np.int64),
            session=np.zeros(0, dtype=np.int32),
            item=np.zeros(0, dtype=np.int32),
            ts=np.zeros(0, dtype=np.int64),
            event_type=np.zeros(0, dtype=np.int8),
            category=np.zeros(0, dtype=np.int32),
            price=np.zeros(0, dtype=np.float32),
        )

    def __len__(self) -> int:
        return int(self.key.shape[0])

    def select(self, mask: npt.NDArray[np.bool_]) -> StoredEvents:
        return replace(
            self,
            key=self.key[mask],
            session=self.session[mask],
            item=self.item[mask],
            ts=self.ts[mask],
            event_type=self.event_type[mask],
            category=self.category[mask],
            price=self.price[mask],
        )

    def codes(self) -> Codes:
        return (
            {value: code for code, value in enumerate(self.session_ids)},
            {value: code for code, value in enumerate(self.item_ids)},
            {value: code for code, value in enumerate(self.categories)},
        )

    def extended(self, rows: list[Row], codes: Codes) -> StoredEvents:
        """These columns with ``rows`` appended; ``codes`` index this instance's vocabularies
        and learn the new strings, which are appended to the vocabulary lists."""
        session_codes, item_codes, category_codes = codes

        def code(value: str, index: dict[str, int], vocabulary: list[str]) -> int:
            found = index.get(value)
            if found is None:
                found = index[value] = len(vocabulary)
                vocabulary.append(value)
            return found

        sessions, items, categories = self.session_ids, self.item_ids, self.categories
        n = len(rows)
        return replace(
            self,
            key=_joined(self.key, np.fromiter((r[0] for r in rows), np.int64, n)),
            session=_joined(
                self.session,
                np.fromiter((code(r[1], session_codes, sessions) for r in rows), np.int32, n),
            ),
            item=_joined(
                self.item,
                np.fromiter((code(r[2], item_codes, items) for r in rows), np.int32, n),
            ),
            ts=_joined(self.ts, np.fromiter((r[3] for r in rows), np.int64, n)),
            event_type=_joined(self.event_type, np.fromiter((r[4] for r in rows), np.int8, n)),
            category=_joined(
                self.category,
                np.fromiter(
                    (-1 if r[5] is None else code(r[5], category_codes, categories) for r in rows),
                    np.int32,
                    n,
                ),
            ),
            price=_joined(
                self.price,
                np.fromiter((np.nan if r[6] is None else r[6] for r in rows), np.float32, n),
            ),
        )

    def compacted(self) -> StoredEvents:
        """Drops vocabulary entries that no row uses (into new lists)."""
        used_sessions, session = np.unique(self.session, return_inverse=True)
        used_items, item = np.unique(self.item, return_inverse=True)
        known = self.category >= 0
        used_categories, known_category = np.unique(self.category[known], return_inverse=True)
        category = np.full(len(self), -1, dtype=np.int32)
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

    def within_bounds(self, max_age_ms: int, max_events: int) -> npt.NDArray[np.bool_]:
        """Rows at most ``max_age_ms`` older than the newest, at most the newest
        ``max_events`` of them."""
        if len(self) == 0:
            return np.ones(0, dtype=bool)
        keep: npt.NDArray[np.bool_] = self.ts >= int(self.ts.max()) - max_age_ms
        excess = int(keep.sum()) - max_events
        if excess > 0:
            inside = np.flatnonzero(keep)
            keep[inside[np.argsort(self.ts[inside], kind="stable")[:excess]]] = False
        return keep

    def to_eventlog(self) -> EventLog:
        """The events as an :class:`EventLog`. Rows go in by time (then key), so the same
        events give the same log, whichever order they arrived in."""
        order = np.lexsort((self.key, self.ts))
        sessions, items, categories = self.session_ids, self.item_ids, self.categories
        return build_log(
            [sessions[code] for code in self.session[order].tolist()],
            [items[code] for code in self.item[order].tolist()],
            self.ts[order].tolist(),
            self.event_type[order].tolist(),
            [categories[code] if code >= 0 else None for code in self.category[order].tolist()],
            [None if price != price else price for price in self.price[order].tolist()],  # NaN
        )


def event_key(event_id: str) -> int:
    """The 64-bit key an event is deduplicated by."""
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def row_of(event: Event) -> Row:
    if event.item_id is None:
        raise ValueError(f"event {event.event_id} names no item")
    return (
        event_key(event.event_id),
        event.session_id,
        event.item_id,
        event.ts,
        EVENT_TYPE_CODES[event.type],
        event.category,
        event.price,
    )


def contains(sorted_keys: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> list[bool]:
    """For each of ``keys``, whether it is in ``sorted_keys``."""
    if sorted_keys.shape[0] == 0:
        return [False] * keys.shape[0]
    found = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.shape[0] - 1)
    present: list[bool] = (sorted_keys[found] == keys).tolist()
    return present


def _joined(old: npt.NDArray[Scalar], new: npt.NDArray[Scalar]) -> npt.NDArray[Scalar]:
    return np.concatenate((old, new))
