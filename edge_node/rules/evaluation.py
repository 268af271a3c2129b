"""What the compiled rules of one request read: the :class:`Evaluation`, and its catalog.

Conditions (:mod:`edge_node.rules.conditions`) and actions (:mod:`edge_node.rules.actions`)
both work on an :class:`Evaluation`; the engine (:mod:`edge_node.rules.engine`) makes one
per request. Kept apart from all three so that none of them imports another to know it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Final, Protocol, runtime_checkable

from protocol.window import Entry, SessionWindow

Binding = tuple[str, ...] | None
Check = Callable[["Evaluation"], Binding]

HOLDS: Final[tuple[str, ...]] = ()


class Catalog(Protocol):
    """Item attributes the edge knows from its bundle."""

    def category_of(self, item_id: str) -> str | None: ...

    def price_of(self, item_id: str) -> float | None: ...


@runtime_checkable
class ItemCatalog(Protocol):
    """The live item catalog's fields beyond the bundle's: stock and attributes."""

    def stock_of(self, item_id: str) -> int | None: ...

    def attribute_of(self, item_id: str, name: str) -> str | int | float | bool | None: ...


class Evaluation:
    """What the checks of one request read, with the request's lazily computed values."""

    __slots__ = ("_local_times", "catalog", "context", "now_ms", "window")

    def __init__(
        self,
        window: SessionWindow,
        context: Mapping[str, str | int | float | bool | None],
        now_ms: int,
        catalog: Catalog,
    ) -> None:
        self.window = window
        self.context = context
        self.now_ms = now_ms
        self.catalog = catalog
        self._local_times: dict[str, tuple[int, int] | None] = {}

    def category_of(self, entry: Entry) -> str | None:
        """An event's category: the one it was sent with, else the catalog's."""
        if entry.category is not None or entry.item is None:
            return entry.category
        return self.catalog.category_of(entry.item)

    def local_time(self, zone: zoneinfo.ZoneInfo) -> tuple[int, int] | None:
        """(weekday with Monday 0, minutes after midnight) now in ``zone``; None if unknowable."""
        key = zone.key
        if key not in self._local_times:
            try:
                moment = dt.datetime.fromtimestamp(self.now_ms / 1000, zone)
            except (OverflowError, ValueError, OSError):
                self._local_times[key] = None
            else:
                self._local_times[key] = (moment.weekday(), moment.hour * 60 + moment.minute)
        return self._local_times[key]
