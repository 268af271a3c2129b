"""Session windows: hot in-process, shared through Redis between a region's replicas.

The local cache is an LRU bounded by a count and an estimate of bytes; a window also
expires once its span has passed without events. With Redis, the event path writes each
changed window through (``SET sess:<id>`` with the window's TTL) and publishes an
invalidation, so other replicas drop their local copy and read the fresh one through on
their next request. Concurrent events for one session on two replicas are last-writer-
wins in Redis: the window may miss one of them, the event log never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from protocol.errors import FeatureContractError
from protocol.window import SessionWindow, WindowConfig

log = logging.getLogger("proxima.edge.sessions")

KEY_PREFIX = "sess:"
INVALIDATION_CHANNEL = "proxima:sess-invalidate"
_ENTRY_BYTES = 160  # rough in-memory cost of one window entry
_WINDOW_BYTES = 1_200  # rough fixed cost of a window and its dicts


class SessionStore:
    def __init__(
        self,
        config: WindowConfig,
        *,
        max_sessions: int,
        max_bytes: int,
        node_id: str,
        redis: aioredis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.node_id = node_id
        self.redis = redis
        self.clock = clock
        self._local: OrderedDict[str, SessionWindow] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.bytes = 0
        self.evictions = 0
        self.redis_errors = 0
        self._listener: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._local)

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

    async def get(self, session_id: str) -> SessionWindow | None:
        """The session's window, or ``None`` for a session this region has not seen."""
        window = self._local_get(session_id)
        if window is None and self.redis is not None:
            window = await self._read_through(session_id)
        return window

    async def get_or_create(self, session_id: str) -> SessionWindow:
        window = await self.get(session_id)
        if window is None:
            window = SessionWindow(session_id, self.config)
            self._put(session_id, window)
        return window

    async def saved(self, window: SessionWindow) -> None:
        """Records that ``window`` changed: re-sizes it locally and writes it through."""
        self._put(window.session_id, window)
        if self.redis is None:
            return
        data = window.to_msgpack()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(KEY_PREFIX + window.session_id, data, px=self.config.span_ms)
                pipe.publish(INVALIDATION_CHANNEL, f"{self.node_id}|{window.session_id}")
                await pipe.execute()
        except RedisError as exc:
            self.redis_errors += 1
            log.warning("session write-through failed (serving from local state): %s", exc)

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

    async def _read_through(self, session_id: str) -> SessionWindow | None:
        assert self.redis is not None
        try:
            data = await self.redis.get(KEY_PREFIX + session_id)
        except RedisError as exc:
            self.redis_errors += 1
            log.warning("session read-through failed (treating as new): %s", exc)
            return None
        if not isinstance(data, bytes):
            return None
        try:
            window = SessionWindow.from_msgpack(data, self.config)
        except FeatureContractError as exc:
            log.warning("dropping unreadable session %r from redis: %s", session_id[:64], exc)
            return None
        self._put(session_id, window)
        return window

    def _put(self, session_id: str, window: SessionWindow) -> None:
        size = _WINDOW_BYTES + _ENTRY_BYTES * len(window)
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
        self.bytes -= self._sizes.pop(session_id, 0)

    def _forget_all(self) -> None:
        self._local.clear()
        self._sizes.clear()
        self.bytes = 0

    async def _listen_for_invalidations(self) -> None:
        assert self.redis is not None
        backoff = 0.1
        feed_lost = False
        while True:
            pubsub: Any = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                backoff = 0.1
                if feed_lost:
                    # Invalidations published while the feed was down were missed.
                    self._forget_all()
                    feed_lost = False
                async for message in pubsub.listen():
                    node, _, session_id = _text(message.get("data")).partition("|")
                    if node != self.node_id:
                        self._drop(session_id)
            except RedisError as exc:
                self.redis_errors += 1
                if not feed_lost:
                    # Without invalidations a local copy may be stale: forget them all, once
                    # (not on every failed retry: while Redis is down, local state is all
                    # there is to serve from).
                    self._forget_all()
                    feed_lost = True
                log.warning("session invalidation feed lost (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    await pubsub.aclose()


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)
