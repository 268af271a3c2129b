"""The edge's replica of the catalog: the ``proxima-catalog`` KV, watched on the one connection.

A :class:`CatalogReplica` is a :class:`~runtime.supervisor.BusListener`. On every connection it
binds the bucket (central creates it; an edge never does) and watches every key. A cold edge
is *bootstrapped* once the watch has delivered the whole bucket as it stood when the watch
began (every revision up to the stream's last sequence then); until then ``/readyz`` says not
ready. When the connection goes the replica keeps what it holds and says it is ``stale``
until a new watch has caught up again.

What it answers, for every item id, in O(1): :meth:`hidden` (unavailable, out of stock or
deleted: never in an answer), the item's fields (category, price, stock, attributes) for
rules and features, and the category index content neighbours are drawn from. Memory is
bounded by ``max_items``: the ids of hidden items are always kept (they must stay filtered);
the details of servable items beyond the bound are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

import nats.errors
from nats.js.client import KV_STREAM_TEMPLATE
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.catalog import CatalogError, Item, decode_item
from protocol.subjects import CATALOG_BUCKET
from protocol.tables import CandidateTables
from runtime.backoff import Backoff
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, describe_error

log = logging.getLogger("proxima.edge.catalog")

_REMOVED: Final = (KV_DEL, KV_PURGE)
_WATCHER_STOP_S: Final = 1.0
_IDLE_POLL_S: Final = 60.0

Listener = Callable[[Item], None]


@dataclass(frozen=True, slots=True)
class CatalogStatus:
    bootstrapped: bool
    stale: bool
    items: int
    hidden: int
    revision: int
    dropped: int  # servable items whose details did not fit in max_items
    last_error: str | None
    updated_at: float | None  # wall time of the last applied change


class CatalogReplica(BusListener):
    def __init__(
        self,
        bus: BusSupervisor | None,
        *,
        max_items: int = 1_000_000,
        bucket: str = CATALOG_BUCKET,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.max_items = max_items
        self.bucket = bucket
        self._retry = (retry_initial_s, retry_max_s)
        self._lifecycle = Lifecycle("the catalog replica")
        self._items: OrderedDict[str, Item] = OrderedDict()  # servable, least recent first
        self._hidden: dict[str, Item] = {}
        self._by_category: dict[str, dict[str, None]] = {}
        self._listeners: list[Listener] = []
        self._watch: asyncio.Task[None] | None = None
        self.bootstrapped = asyncio.Event()
        self._caught_up = False
        self.revision = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._updated_at: float | None = None

    # -- what the edge reads --------------------------------------------------------------

    @property
    def status(self) -> CatalogStatus:
        return CatalogStatus(
            bootstrapped=self.bootstrapped.is_set(),
            stale=self.stale,
            items=len(self._items),
            hidden=len(self._hidden),
            revision=self.revision,
            dropped=self._dropped,
            last_error=self._last_error,
            updated_at=self._updated_at,
        )

    @property
    def stale(self) -> bool:
        return not self._caught_up

    def hidden(self, item_id: str) -> bool:
        return item_id in self._hidden

    @property
    def hidden_count(self) -> int:
        return len(self._hidden)

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id) or self._hidden.get(item_id)

    def category_of(self, item_id: str) -> str | None:
        item = self._items.get(item_id)
        return None if item is None else item.category

    def price_of(self, item_id: str) -> float | None:
        item = self._items.get(item_id)
        return None if item is None else item.price

    def in_category(self, category: str) -> Iterator[str]:
        """Servable items of ``category``, most recently changed last."""
        return iter(self._by_category.get(category, ()))

    def servable_items(self) -> Iterator[Item]:
        return iter(self._items.values())

    def newest_in_category(self, category: str, limit: int) -> list[str]:
        """Up to ``limit`` servable items of ``category``, most recently changed first."""
        members = self._by_category.get(category)
        return [] if members is None else list(itertools.islice(reversed(members), limit))

    def newest(self, limit: int) -> list[str]:
        """Up to ``limit`` servable items, most recently changed first."""
        return list(itertools.islice(reversed(self._items), limit))

    def on_change(self, listener: Listener) -> None:
        """``listener(item)`` after each applied change (the new state, servable or not)."""
        self._listeners.append(listener)

    # -- applying changes -----------------------------------------------------------------

    def apply(self, item: Item) -> None:
        """Takes ``item`` as the newest state of its id (the KV orders the changes)."""
        self._forget(item.id)
        if item.servable:
            self._remember(item)
        else:
            self._hidden[item.id] = item
            while len(self._hidden) + len(self._items) > self.max_items and self._items:
                self._evict_oldest()
        self._updated_at = time.time()
        for listener in self._listeners:
            try:
                listener(item)
            except Exception:
                log.exception("a catalog listener failed on item %s", item.id)

    def remove(self, item_id: str) -> None:
        """The key was deleted or purged from the bucket: nothing is known of the item."""
        self._forget(item_id)
        self._updated_at = time.time()

    def _remember(self, item: Item) -> None:
        if len(self._hidden) + len(self._items) >= self.max_items:
            if not self._items:
                self._dropped += 1
                return
            self._evict_oldest()
        self._items[item.id] = item
        if item.category is not None:
            self._by_category.setdefault(item.category, {})[item.id] = None

    def _evict_oldest(self) -> None:
        item_id, item = self._items.popitem(last=False)
        self._dropped += 1
        self._unindex(item_id, item)

    def _forget(self, item_id: str) -> None:
        old = self._items.pop(item_id, None)
        if old is not None:
            self._unindex(item_id, old)
        self._hidden.pop(item_id, None)

    def _unindex(self, item_id: str, item: Item | None) -> None:
        if item is not None and item.category is not None:
            members = self._by_category.get(item.category)
            if members is not None:
                members.pop(item_id, None)
                if not members:
                    del self._by_category[item.category]

    # -- the service and the bus ----------------------------------------------------------

    async def start(self) -> None:
        self._lifecycle.begin_start()
        if self.bus is not None:
            self.bus.attach(self)

    async def close(self, timeout_s: float = 5.0) -> None:
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        if self.bus is not None:
            self.bus.detach(self)
        await self._stop_watching()
        self._lifecycle.finish_close()

    async def bus_connected(self, connection: BusConnection) -> None:
        if not self._lifecycle.running:
            return
        await self._stop_watching()
        self._watch = asyncio.create_task(self._keep_watching(connection), name="catalog-watch")

    async def bus_lost(self) -> None:
        await self._stop_watching()
        if self._caught_up:
            log.warning("NATS connection lost; serving the last catalog as stale")
        self._caught_up = False

    def bus_error(self, error: Exception) -> None:
        self._last_error = f"NATS: {describe_error(error)}"

    async def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _keep_watching(self, connection: BusConnection) -> None:
        backoff = Backoff(*self._retry)
        while connection.usable:
            js = connection.jetstream()
            try:
                kv = await js.key_value(self.bucket)
                target = await self._last_sequence(connection)
                watcher = await kv.watchall()
            except BucketNotFoundError:
                if backoff.failures == 0:
                    log.info("no %s bucket yet; no item is filtered", self.bucket)
                self._caught_up = True
                self.bootstrapped.set()  # an empty catalog is the whole catalog
            except Exception as exc:
                self._note_error(f"watching the catalog failed: {describe_error(exc)}")
                self._caught_up = False
            else:
                backoff.reset()
                try:
                    await self._read(watcher, target)
                    continue
                except Exception as exc:
                    self._note_error(f"the catalog watch failed: {describe_error(exc)}")
                    self._caught_up = False
            await backoff.sleep(connection.lost)

    async def _last_sequence(self, connection: BusConnection) -> int:
        stream = KV_STREAM_TEMPLATE.format(bucket=self.bucket)
        try:
            info = await connection.jetstream().stream_info(stream)
        except NotFoundError:
            return 0
        return int(info.state.last_seq or 0)

    async def _read(self, watcher: Any, target: int) -> None:
        """Applies every update; caught up once revision ``target`` (or the marker) is seen."""
        marker = False
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=_IDLE_POLL_S)
                except nats.errors.TimeoutError:
                    continue  # quiet: the ordered consumer resets itself on a gap
                if entry is None:
                    marker = True
                elif isinstance(entry, KeyValue.Entry):
                    self._apply_entry(entry)
                else:
                    return
                if not self._caught_up and marker and self.revision >= target:
                    self._caught_up = True
                    self.bootstrapped.set()
                    log.info(
                        "catalog caught up at revision %d: %d items, %d hidden",
                        self.revision, len(self._items), len(self._hidden),
                    )  # fmt: skip
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher.stop(), _WATCHER_STOP_S)

    def _apply_entry(self, entry: KeyValue.Entry) -> None:
        self.revision = max(self.revision, entry.revision or 0)
        if entry.operation in _REMOVED or entry.value is None:
            self.remove(entry.key)
            return
        try:
            item = decode_item(entry.value)
        except CatalogError as exc:
            self._note_error(f"item {entry.key} (revision {entry.revision}) is unreadable: {exc}")
            return
        self.apply(item)

    def _note_error(self, message: str) -> None:
        self._last_error = message
        log.warning("%s", message)


class ItemFields:
    """Item fields for rules: the catalog's when it knows the item, else the bundle's."""

    __slots__ = ("_fallback", "_replica")

    def __init__(self, replica: CatalogReplica, fallback: FieldSource) -> None:
        self._replica = replica
        self._fallback = fallback

    def category_of(self, item_id: str) -> str | None:
        item = self._replica.get(item_id)
        if item is not None and item.category is not None:
            return item.category
        return self._fallback.category_of(item_id)

    def price_of(self, item_id: str) -> float | None:
        item = self._replica.get(item_id)
        if item is not None and item.price is not None:
            return item.price
        return self._fallback.price_of(item_id)

    def stock_of(self, item_id: str) -> int | None:
        item = self._replica.get(item_id)
        return None if item is None else item.stock

    def attribute_of(self, item_id: str, name: str) -> str | int | float | bool | None:
        item = self._replica.get(item_id)
        return None if item is None else item.attributes.get(name)


class FieldSource(Protocol):
    def category_of(self, item_id: str) -> str | None: ...

    def price_of(self, item_id: str) -> float | None: ...


def overlay(tables: CandidateTables, item: Item) -> None:
    """Writes the catalog's price and category of ``item`` into the bundle's per-item tables,
    which the ranker's features read; an item the bundle does not hold is left alone."""
    index = tables.item_index.get(item.id)
    if index is None:
        return
    if item.price is not None:
        tables.price[index] = item.price
    if item.category is not None:
        tables.category[index] = tables.category_index.get(item.category, -1)


def overlay_all(tables: CandidateTables, replica: CatalogReplica) -> None:
    for item in replica.servable_items():
        overlay(tables, item)


def catalog_summary(replica: CatalogReplica) -> dict[str, Any]:
    """The replica's state as ``/readyz`` shows it."""
    status = replica.status
    return {
        "loaded": status.bootstrapped,
        "stale": status.stale,
        "revision": status.revision,
        "items": status.items,
        "hidden": status.hidden,
        "dropped": status.dropped,
        "last_error": status.last_error,
    }


class CatalogCollector(Collector):
    """The replica's gauges, read when ``/metrics`` is scraped."""

    def __init__(self, replica: CatalogReplica) -> None:
        self._replica = replica

    def collect(self) -> Iterator[Metric]:
        status = self._replica.status
        for name, value, doc in (
            ("proxima_edge_catalog_stale", status.stale, "1 while the catalog may be behind"),
            ("proxima_edge_catalog_items", status.items, "Servable catalog items held"),
            ("proxima_edge_catalog_hidden", status.hidden, "Items hidden from every answer"),
            ("proxima_edge_catalog_revision", status.revision, "Last catalog revision applied"),
            ("proxima_edge_catalog_dropped", status.dropped, "Item details beyond max items"),
        ):
            yield GaugeMetricFamily(name, doc, value=float(value))
