"""Session windows: hot in-process, shared through Redis between a region's replicas.

The local cache is an LRU bounded by a count and by bytes: :func:`window_bytes` counts
what a window really holds (its entries with their strings and numbers, the remembered
event ids, every dict and set), within a few percent of what the allocator hands out
(``tests/edge_node/test_session_memory.py`` measures it). A window also expires once its
span has passed without events.

With Redis, the event path writes a batch's changed windows through in one pipeline
(``SET sess:<id>`` with the window's TTL, and an invalidation published), so other
replicas drop their local copy and read the fresh one through on their next request.
Concurrent events for one session on two replicas are last-writer-wins in Redis: the
window may miss one of them, the event log never does.

Redis must not stall the edge: every call has a short socket timeout (``redis_options``)
and goes through a :class:`~edge_node.breaker.CircuitBreaker`; while it is open the store
answers from its local windows and remembers which it could not write through. The
invalidation feed pings Redis and is dropped when the answers stop; once it is back, local
copies that may have missed invalidations are dropped and the windows changed meanwhile are
written through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable
from operator import itemgetter
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from edge_node.breaker import CircuitBreaker
from edge_node.metrics import EdgeMetrics
from protocol.errors import FeatureContractError
from protocol.window import Entry, SessionWindow, WindowConfig
from runtime.backoff import Backoff

log = logging.getLogger("proxima.edge.sessions")

KEY_PREFIX = "sess:"
INVALIDATION_CHANNEL = "proxima:sess-invalidate"
RESYNC_CHUNK = 500  # windows per pipeline when writing through after an outage

T = TypeVar("T")

_getsizeof = sys.getsizeof
_item, _category, _price = itemgetter(2), itemgetter(3), itemgetter(4)
_ENTRY_BYTES = _getsizeof(Entry(0, 0, None, None, None)) + _getsizeof(1_800_000_000_000)
_PRICE_BYTES = _getsizeof(1.5)
_STR_BYTES = _getsizeof("")  # a compact ASCII string's header; each character adds a byte
# The store's own cost per session: its slot in the LRU and in the size table.
_STORE_ENTRY_BYTES = 2 * 100 + _getsizeof(20_000)


def window_bytes(window: SessionWindow) -> int:
    """What ``window`` holds in memory, in bytes (its config is shared, not counted).

    Strings are counted as compact ASCII ones (``len`` plus the object's header, which is
    what ``sys.getsizeof`` gives for them and far cheaper to get): event ids are ASCII by
    the schema, and so are nearly all session and item ids.
    """
    entries = window.entries
    prices = list(map(_price, entries))
    items = list(filter(None, map(_item, entries)))
    categories = list(filter(None, map(_category, entries)))
    seen = window._seen  # the remembered event ids: up to twice max_events strings
    strings = len(items) + len(categories) + len(seen) + 1
    return (
        _getsizeof(window)
        + _getsizeof(window.type_counts)
        + _getsizeof(entries)
        + len(entries) * _ENTRY_BYTES
        + _PRICE_BYTES * (len(prices) - prices.count(None))
        + strings * _STR_BYTES
        + len(window.session_id)
        + sum(map(len, items))
        + sum(map(len, categories))
        + sum(map(len, seen))
        + _getsizeof(window.item_counts)
        + _getsizeof(window.item_last_ts)
        + _getsizeof(window.category_counts)
        + _getsizeof(window.carted)
        + _getsizeof(window.bought)
        + _getsizeof(seen)
        + _STORE_ENTRY_BYTES
    )


def redis_timeouts(timeout_s: float) -> dict[str, Any]:
    """Client options that keep each Redis call within ``timeout_s`` per step, no retries
    (the breaker decides when to try again)."""
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }


class _Skipped(Exception):
    """The breaker refused the call (internal: never leaves this module)."""


class _FeedStalled(Exception):
    """The invalidation feed's connection stopped answering (internal to this module)."""


class SessionStore:
    def __init__(
        self,
        config: WindowConfig,
        *,
        max_sessions: int,
        max_bytes: int,
        node_id: str,
        redis: aioredis.Redis | None = None,
        breaker: CircuitBreaker | None = None,
        feed_ping_s: float = 1.0,
        metrics: EdgeMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.node_id = node_id
        self.redis = redis
        self.breaker = breaker or CircuitBreaker(3, 2.0)
        self.feed_ping_s = feed_ping_s
        self.metrics = metrics
        self.clock = clock
        self._local: OrderedDict[str, SessionWindow] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._unsynced: set[str] = set()  # changed locally, not yet written through
        self.bytes = 0
        self.evictions = 0
        self.redis_errors = 0
        self.redis_skipped = 0
        self.feed_up = False
        self._listener: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._local)

    @property
    def unsynced(self) -> int:
        return len(self._unsynced)

    async def start(self) -> None:
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen_for_invalidations())

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    def reconfigure(self, config: WindowConfig) -> None:
        """A new bundle may bring another window span; existing windows keep their events."""
        self.config = config
        for window in self._local.values():
            window.config = config

    # -- reading ----------------------------------------------------------------------------

    async def get(self, session_id: str) -> SessionWindow | None:
        """The session's window, or ``None`` for a session this region has not seen."""
        return (await self.get_many((session_id,)))[session_id]

    async def get_many(self, session_ids: Iterable[str]) -> dict[str, SessionWindow | None]:
        """The windows of ``session_ids``: local ones at once, the rest in one Redis round
        trip (``None`` for a session unknown, or when Redis cannot be asked)."""
        found: dict[str, SessionWindow | None] = {}
        missing: list[str] = []
        for session_id in session_ids:
            if session_id in found:
                continue
            window = self._local_get(session_id)
            found[session_id] = window
            if window is None:
                missing.append(session_id)
        if missing and self.redis is not None:
            for session_id, window in zip(missing, await self._read_through(missing), strict=True):
                held = self._local_get(session_id)  # created while Redis was asked?
                if held is not None:
                    found[session_id] = held
                elif window is not None:
                    self._put(session_id, window)
                    found[session_id] = window
        return found

    def create(self, session_id: str) -> SessionWindow:
        """A new, empty window for ``session_id``, held locally."""
        window = SessionWindow(session_id, self.config)
        self._put(session_id, window)
        return window

    async def get_or_create(self, session_id: str) -> SessionWindow:
        window = await self.get(session_id)
        return window if window is not None else self.create(session_id)

    # -- writing ----------------------------------------------------------------------------

    async def saved(self, window: SessionWindow) -> None:
        """Records that ``window`` changed: re-sizes it locally and writes it through."""
        await self.save_many((window,))

    async def save_many(self, windows: Collection[SessionWindow]) -> None:
        """Records that ``windows`` changed; writes them through in one pipeline."""
        for window in windows:
            self._put(window.session_id, window)
        if self.redis is None or not windows:
            return
        ids = [w.session_id for w in windows]
        self._unsynced.update(ids)
        try:
            await self._call("write", lambda: self._write(windows))
        except (RedisError, _Skipped):
            return  # counted; written through once Redis is back
        self._unsynced.difference_update(ids)

    async def _write(self, windows: Iterable[SessionWindow]) -> None:
        assert self.redis is not None
        span_ms = self.config.span_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for window in windows:
                pipe.set(KEY_PREFIX + window.session_id, window.to_msgpack(), px=span_ms)
                pipe.publish(INVALIDATION_CHANNEL, f"{self.node_id}|{window.session_id}")
            await pipe.execute()

    async def _read_through(self, session_ids: list[str]) -> list[SessionWindow | None]:
        redis = self.redis
        assert redis is not None
        keys = [KEY_PREFIX + s for s in session_ids]
        try:
            values = await self._call("read", lambda: redis.mget(keys))
        except (RedisError, _Skipped):
            return [None] * len(session_ids)  # counted; served as new sessions meanwhile
        return [self._decode(s, v) for s, v in zip(session_ids, values, strict=True)]

    def _decode(self, session_id: str, data: object) -> SessionWindow | None:
        if not isinstance(data, bytes):
            return None
        try:
            return SessionWindow.from_msgpack(data, self.config)
        except FeatureContractError as exc:
            log.warning("dropping unreadable session %r from redis: %s", session_id[:64], exc)
            return None

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """One Redis call under the breaker; raises :class:`_Skipped` when it is open and
        :class:`RedisError` (counted) when the call fails or times out."""
        if not self.breaker.allow():
            self.redis_skipped += 1
            if self.metrics is not None:
                self.metrics.redis_skipped.labels(op).inc()
            raise _Skipped(op)
        try:
            result = await call()
        except RedisError as exc:
            self.breaker.failed()
            self._count_error(op)
            log.warning("session %s failed (serving from local state): %s", op, exc)
            raise
        self.breaker.succeeded()
        return result

    def _count_error(self, op: str) -> None:
        self.redis_errors += 1
        if self.metrics is not None:
            self.metrics.redis_errors.labels(op).inc()

    # -- the local LRU ----------------------------------------------------------------------

    def _local_get(self, session_id: str) -> SessionWindow | None:
        window = self._local.get(session_id)
        if window is None:
            return None
        last = window.last_ts
        if last is not None and last < self.clock() * 1000 - self.config.span_ms:
            self._drop(session_id)
            return None
        self._local.move_to_end(session_id)
        return window

    def _put(self, session_id: str, window: SessionWindow) -> None:
        size = window_bytes(window)
        self.bytes += size - self._sizes.get(session_id, 0)
        self._sizes[session_id] = size
        self._local[session_id] = window
        self._local.move_to_end(session_id)
        while len(self._local) > self.max_sessions or (
            self.bytes > self.max_bytes and len(self._local) > 1
        ):
            oldest = next(iter(self._local))
            self._drop(oldest)
            self.evictions += 1

    def _drop(self, session_id: str) -> None:
        self._local.pop(session_id, None)
        self._unsynced.discard(session_id)
        self.bytes -= self._sizes.pop(session_id, 0)

    # -- the invalidation feed --------------------------------------------------------------

    async def _listen_for_invalidations(self) -> None:
        assert self.redis is not None
        backoff = Backoff(0.1, 5.0, stable_after_s=5 * self.feed_ping_s)
        feed_lost = False
        while True:
            pubsub: Any = self.redis.pubsub()
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                await self._confirmed(pubsub)
                if feed_lost:
                    await self._resync()
                    feed_lost = False
                self.feed_up = True
                backoff.succeeded()
                await self._follow(pubsub)
            except (RedisError, OSError, _FeedStalled) as exc:
                self._count_error("feed")
                self.feed_up = False
                feed_lost = True
                backoff.lost()
                delay = backoff.next_delay()
                log.warning("session invalidation feed lost (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
            finally:
                self.feed_up = False
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()

    async def _confirmed(self, pubsub: Any) -> None:
        """Waits for Redis to confirm the subscription: a stopped server accepts the
        connection and the command, and never answers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.feed_ping_s
        while loop.time() < deadline:
            message = await pubsub.get_message(timeout=min(self.feed_ping_s, 0.5))
            if message is not None and message.get("type") == "subscribe":
                return
        raise _FeedStalled("redis did not confirm the subscription")

    async def _follow(self, pubsub: Any) -> None:
        """Reads invalidations; pings every ``feed_ping_s`` and gives up (raising
        :class:`_FeedStalled`) when nothing, not even a pong, came for two of them."""
        loop = asyncio.get_running_loop()
        ping_s = self.feed_ping_s
        heard = next_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=min(ping_s, 0.5))
            now = loop.time()
            if message is not None:
                heard = now
                if message.get("type") == "message":
                    node, _, session_id = _text(message.get("data")).partition("|")
                    if node != self.node_id:
                        self._drop(session_id)
            if now - heard > 2 * ping_s:
                raise _FeedStalled(f"no answer from redis for {now - heard:.1f}s")
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + ping_s

    async def _resync(self) -> None:
        """After the feed was down: copies that may have missed an invalidation are dropped,
        windows changed meanwhile are written through (last writer wins, as ever)."""
        clean = [s for s in self._local if s not in self._unsynced]
        pending = [self._local[s] for s in self._unsynced if s in self._local]
        for start in range(0, len(pending), RESYNC_CHUNK):
            chunk = pending[start : start + RESYNC_CHUNK]
            await self._write(chunk)
            self._unsynced.difference_update(w.session_id for w in chunk)
        for session_id in clean:
            if session_id not in self._unsynced:  # changed again while writing: keep it
                self._drop(session_id)
        self.breaker.succeeded()


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)
