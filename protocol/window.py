"""The session window: what the edge remembers of a session, and what the trainer replays.

A window holds a session's item and search events of the last ``span_ms`` (at most
``max_events`` of them) with running counters, the items in its cart and those it bought.
The edge and the trainer both feed events through :meth:`SessionWindow.add`, so the
features computed from a window are the same at serving and at training time.

Window time is the edge's receive time when an event has one, else the client time: a
page with a wrong clock must not expire its own session.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final, NamedTuple

import msgpack

from protocol.errors import FeatureContractError
from protocol.events import EVENT_TYPE_CODES, EVENT_TYPES, Event

WINDOW_FORMAT: Final = 1
N_TYPES: Final = len(EVENT_TYPES)
VIEW, CLICK, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, SEARCH, IMPRESSION = range(N_TYPES)
# Revisions are unique across all windows of the process, so a cache keyed by one can never
# confuse two windows of a session (say, a local copy and one re-read from Redis).
_REVISIONS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class WindowConfig:
    span_ms: int = 30 * 60 * 1000
    max_events: int = 50

    def __post_init__(self) -> None:
        if self.span_ms <= 0:
            raise FeatureContractError("window span must be positive", field="span_ms")
        if not 1 <= self.max_events <= 10_000:
            raise FeatureContractError("window max_events must be 1-10000", field="max_events")


class Entry(NamedTuple):
    ts: int
    type: int
    item: str | None
    category: str | None
    price: float | None


class SessionWindow:
    """One session's recent events and counters. Not thread-safe; one owner at a time."""

    __slots__ = (
        "_seen",
        "bought",
        "carted",
        "category_counts",
        "config",
        "entries",
        "item_counts",
        "item_last_ts",
        "revision",
        "session_id",
        "type_counts",
    )

    def __init__(self, session_id: str, config: WindowConfig | None = None) -> None:
        self.session_id = session_id
        self.config = config or WindowConfig()
        self.entries: deque[Entry] = deque()
        self.type_counts = [0] * N_TYPES
        self.item_counts: dict[str, int] = {}
        self.item_last_ts: dict[str, int] = {}
        self.category_counts: dict[str, int] = {}
        self.carted: dict[str, float | None] = {}
        self.bought: set[str] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.revision = next(_REVISIONS)  # changes whenever what features see changes

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def first_ts(self) -> int | None:
        return self.entries[0].ts if self.entries else None

    @property
    def last_ts(self) -> int | None:
        return self.entries[-1].ts if self.entries else None

    @property
    def last_item(self) -> str | None:
        for entry in reversed(self.entries):
            if entry.item is not None:
                return entry.item
        return None

    def recent_items(self) -> list[str]:
        """Distinct items of the window, most recent first."""
        seen: dict[str, None] = {}
        for entry in reversed(self.entries):
            if entry.item is not None and entry.item not in seen:
                seen[entry.item] = None
        return list(seen)

    def cart_value(self) -> float:
        return sum(p for p in self.carted.values() if p is not None)

    def has_seen(self, event_id: str) -> bool:
        return event_id in self._seen

    # -- writing ---------------------------------------------------------------------------

    def add(self, event: Event) -> bool:
        """Adds an event; ``False`` when its ``event_id`` was already taken (a retry)."""
        if event.event_id in self._seen:
            return False
        self._remember(event.event_id)
        type_code = EVENT_TYPE_CODES[event.type]
        if type_code == IMPRESSION:
            return True  # impressions feed click-through telemetry, not the window
        ts = event.received_at if event.received_at is not None else event.ts
        self._append(Entry(ts, type_code, event.item_id, event.category, event.price))
        self.expire(ts)
        return True

    def expire(self, now_ms: int) -> None:
        """Drops events older than the span before ``now_ms`` and beyond ``max_events``."""
        horizon = now_ms - self.config.span_ms
        entries = self.entries
        while entries and (entries[0].ts < horizon or len(entries) > self.config.max_events):
            self._forget(entries.popleft())

    def _append(self, entry: Entry) -> None:
        self._count(entry)
        item = entry.item
        if item is None:
            return
        if entry.type == ADD_TO_CART:
            self.carted[item] = entry.price
        elif entry.type == REMOVE_FROM_CART:
            self.carted.pop(item, None)
        elif entry.type == PURCHASE:
            self.carted.pop(item, None)
            self.bought.add(item)

    def _count(self, entry: Entry) -> None:
        self.revision = next(_REVISIONS)
        self.entries.append(entry)
        self.type_counts[entry.type] += 1
        item = entry.item
        if item is not None:
            self.item_counts[item] = self.item_counts.get(item, 0) + 1
            self.item_last_ts[item] = max(entry.ts, self.item_last_ts.get(item, entry.ts))
            if entry.category is not None:
                self.category_counts[entry.category] = (
                    self.category_counts.get(entry.category, 0) + 1
                )

    def _forget(self, entry: Entry) -> None:
        self.revision = next(_REVISIONS)
        self.type_counts[entry.type] -= 1
        item = entry.item
        if item is None:
            return
        left = self.item_counts[item] - 1
        if left:
            self.item_counts[item] = left
            if entry.ts >= self.item_last_ts[item]:
                # Out-of-order timestamps: the entry leaving may have been the item's latest.
                self.item_last_ts[item] = max(e.ts for e in self.entries if e.item == item)
        else:
            del self.item_counts[item]
            del self.item_last_ts[item]
        if entry.category is not None:
            left = self.category_counts[entry.category] - 1
            if left:
                self.category_counts[entry.category] = left
            else:
                del self.category_counts[entry.category]

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        while len(self._seen) > 2 * self.config.max_events:
            self._seen.popitem(last=False)

    # -- serialisation ---------------------------------------------------------------------

    def to_msgpack(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                WINDOW_FORMAT,
                self.session_id,
                [list(e) for e in self.entries],
                list(self._seen),
                [[item, price] for item, price in self.carted.items()],
                sorted(self.bought),
            ],
            use_bin_type=True,
        )
        return packed

    @classmethod
    def from_msgpack(cls, data: bytes, config: WindowConfig | None = None) -> SessionWindow:
        """Rebuilds a window; raises :class:`FeatureContractError` on anything malformed."""
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
            fmt, session_id, entries, seen, carted, bought = raw
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise FeatureContractError(
                "session window is not valid msgpack", code="bad_window"
            ) from exc
        if fmt != WINDOW_FORMAT or not isinstance(session_id, str):
            raise FeatureContractError("session window has an unknown format", code="bad_window")
        window = cls(session_id, config)
        try:
            for ts, type_code, item, category, price in entries:
                if not (
                    isinstance(ts, int) and isinstance(type_code, int) and 0 <= type_code < N_TYPES
                ):
                    raise TypeError("entry")
                window._append_checked(Entry(ts, type_code, item, category, price))
            for event_id in seen:
                window._remember(str(event_id))
            window.carted = {str(item): (None if p is None else float(p)) for item, p in carted}
            window.bought = {str(item) for item in bought}
            window.revision = next(_REVISIONS)
        except (ValueError, TypeError) as exc:
            raise FeatureContractError(
                "session window has a malformed entry", code="bad_window"
            ) from exc
        return window

    def _append_checked(self, entry: Entry) -> None:
        for value in (entry.item, entry.category):
            if value is not None and not isinstance(value, str):
                raise TypeError("entry field")
        if entry.price is not None and not isinstance(entry.price, int | float):
            raise TypeError("entry price")
        self._count(entry)  # the cart is restored as saved, not replayed
