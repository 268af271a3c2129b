"""Returning users: each user's recent items across sessions, and erasing a user.

When an event carries ``user_id`` and an item, the item is pushed onto the user's list in the
region's Redis (``user:<id>``, newest first, trimmed to ``max_items``, expiring
``ttl_s`` after the last push), and the session is remembered as that user's (in process,
bounded). A session of a known user whose window is still short is answered as if the user's
earlier items were its oldest views (:meth:`UserHistory.augment`): they become candidates and
feed the features, but the stored window is left as it is.

:meth:`UserHistory.erase` forgets a user here and in Redis (the list, the windows of the
user's sessions this edge knows, with the invalidation other replicas listen to). The erasure
is recorded first in the ``proxima-erasures`` KV (key: sha256 of the user id), which the
trainer must honour; if it cannot be recorded nothing is erased and the caller gets a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
import redis.asyncio as aioredis
from nats.js.errors import BucketNotFoundError
from redis.exceptions import RedisError

from edge_node.errors import Overloaded
from edge_node.sessions import INVALIDATION_CHANNEL, KEY_PREFIX, SessionStore
from protocol.events import EVENT_TYPES, Event
from protocol.subjects import ERASURES_BUCKET
from protocol.window import SessionWindow
from runtime.backoff import Backoff
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, describe_error

log = logging.getLogger("proxima.edge.users")

USER_PREFIX: Final = "user:"
MAX_SESSIONS_PER_USER: Final = 16
AUGMENT_BELOW: Final = 10  # windows with fewer entries are topped up with the user's items
_BUS_WAIT_S: Final = 2.0


def erasure_key(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Erased:
    user_id: str
    sessions: int
    recorded: bool


class UserHistory:
    def __init__(
        self,
        sessions: SessionStore,
        redis: aioredis.Redis | None,
        *,
        max_items: int,
        ttl_s: float,
        node_id: str,
        max_users: int = 100_000,
        bus: BusSupervisor | None = None,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.node_id = node_id
        self.max_users = max_users
        self.bus = bus
        self._recent: OrderedDict[str, deque[str]] = OrderedDict()  # user -> items, newest first
        self._user_sessions: OrderedDict[str, deque[str]] = OrderedDict()
        self._session_user: OrderedDict[str, str] = OrderedDict()
        self._augmented: dict[str, tuple[int, int, SessionWindow]] = {}
        self._version = 0  # bumps on every change, so an augmented window is built again
        self.redis_errors = 0

    # -- recording --------------------------------------------------------------------------

    async def record(self, events: Iterable[Event]) -> None:
        pushes: list[tuple[str, str]] = []
        for event in events:
            if event.user_id is None:
                continue
            self._link(event.user_id, event.session_id)
            if event.item_id is not None and event.type != "impression":
                self._push_local(event.user_id, event.item_id)
                pushes.append((event.user_id, event.item_id))
        if not pushes or self.redis is None:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id, item_id in pushes:
                    key = USER_PREFIX + user_id
                    pipe.lpush(key, item_id)
                    pipe.ltrim(key, 0, self.max_items - 1)
                    pipe.expire(key, int(self.ttl_s))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.redis_errors += 1  # the local list still has them; Redis catches up later
            log.warning("cannot record recent items of users in Redis: %s", exc)

    def _link(self, user_id: str, session_id: str) -> None:
        if self._session_user.get(session_id) == user_id:
            return
        self._session_user[session_id] = user_id
        self._session_user.move_to_end(session_id)
        while len(self._session_user) > self.max_users:
            self._session_user.popitem(last=False)
        owned = self._user_sessions.setdefault(user_id, deque(maxlen=MAX_SESSIONS_PER_USER))
        if session_id not in owned:
            owned.append(session_id)
        self._user_sessions.move_to_end(user_id)
        while len(self._user_sessions) > self.max_users:
            self._user_sessions.popitem(last=False)

    def _push_local(self, user_id: str, item_id: str) -> None:
        items = self._recent.get(user_id)
        if items is None:
            items = self._recent[user_id] = deque(maxlen=self.max_items)
        if items and items[0] == item_id:
            return
        items.appendleft(item_id)
        self._recent.move_to_end(user_id)
        while len(self._recent) > self.max_users:
            self._recent.popitem(last=False)
        self._version += 1

    # -- reading ----------------------------------------------------------------------------

    def user_of(self, session_id: str) -> str | None:
        return self._session_user.get(session_id)

    async def recent(self, user_id: str) -> list[str]:
        """The user's recent items, newest first (this edge's, else the region's Redis)."""
        local = self._recent.get(user_id)
        if local is not None:
            return list(local)
        if self.redis is None:
            return []
        try:
            raw = await self.redis.lrange(USER_PREFIX + user_id, 0, self.max_items - 1)
        except (RedisError, OSError):
            self.redis_errors += 1
            return []
        items = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
        if items:
            self._recent[user_id] = deque(items, maxlen=self.max_items)
            self._version += 1
        return items

    async def augment(self, window: SessionWindow) -> SessionWindow:
        """``window``, or a copy with the user's earlier items as its oldest views."""
        if len(window.entries) >= AUGMENT_BELOW:
            return window
        user_id = self.user_of(window.session_id)
        if user_id is None:
            return window
        cached = self._augmented.get(window.session_id)
        if cached is not None and cached[:2] == (window.revision, self._version):
            return cached[2]
        history = [i for i in await self.recent(user_id) if i not in window.item_counts]
        if not history:
            return window
        start = window.first_ts or int(time.time() * 1000)
        copy = SessionWindow(window.session_id, window.config)
        for age, item_id in enumerate(reversed(history[: window.config.max_events // 2])):
            offset = len(history) - age
            copy.add(
                Event(f"user-history-{age:04d}", window.session_id, "view", start - offset,
                      item_id=item_id)
            )  # fmt: skip
        for position, entry in enumerate(window.entries):
            copy.add(
                Event(f"window-{position:04d}", window.session_id, EVENT_TYPES[entry.type],
                      entry.ts, item_id=entry.item, category=entry.category, price=entry.price)
            )  # fmt: skip
        self._augmented[window.session_id] = (window.revision, self._version, copy)
        if len(self._augmented) > self.max_users:
            self._augmented.pop(next(iter(self._augmented)))
        return copy

    # -- erasing ----------------------------------------------------------------------------

    async def erase(self, user_id: str, *, region: str) -> Erased:
        recorded = await self._record_erasure(user_id, region)
        sessions = await self.erase_here(user_id)
        return Erased(user_id, sessions, recorded)

    async def erase_here(self, user_id: str) -> int:
        """Forgets ``user_id`` on this edge and in this region's Redis; the sessions erased."""
        sessions = list(self._user_sessions.pop(user_id, ()))
        self._recent.pop(user_id, None)
        for session_id in sessions:
            self._session_user.pop(session_id, None)
            self._augmented.pop(session_id, None)
            self.sessions._drop(session_id)
        self._version += 1
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.delete(USER_PREFIX + user_id)
                    for session_id in sessions:
                        pipe.delete(KEY_PREFIX + session_id)
                        pipe.publish(INVALIDATION_CHANNEL, f"{self.node_id}|{session_id}")
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                raise Overloaded(
                    "the erasure is recorded but Redis could not be reached; send it again",
                    code="erasure_incomplete",
                    retry_after_s=1,
                ) from exc
        return len(sessions)

    async def _record_erasure(self, user_id: str, region: str) -> bool:
        if self.bus is None:
            return False
        record: dict[str, Any] = {
            "user_id": user_id,
            "erased_at": int(time.time() * 1000),
            "region": region,
            "node": self.node_id,
        }
        try:
            connection = await self.bus.wait_connected(_BUS_WAIT_S)
            js = connection.jetstream()
            try:
                kv = await js.key_value(ERASURES_BUCKET)  # central makes it; edges only write
            except BucketNotFoundError as exc:
                raise Overloaded(
                    "erasures cannot be recorded yet: central has not created the erasures "
                    "bucket (proxima central run makes it); nothing was erased",
                    code="erasure_unavailable",
                    retry_after_s=5,
                ) from exc
            await kv.put(erasure_key(user_id), json.dumps(record).encode())
        except (TimeoutError, nats.errors.Error) as exc:
            raise Overloaded(
                "the erasure cannot be recorded while the bus is away; nothing was erased",
                code="erasure_unavailable",
                retry_after_s=1,
            ) from exc
        return True


class ErasureFollower(BusListener):
    """Applies every erasure recorded in ``proxima-erasures`` (by any edge, in any region) to
    this edge and its region's Redis, so a user erased in one region is erased in all."""

    def __init__(self, users: UserHistory, bus: BusSupervisor) -> None:
        self.users = users
        self.bus = bus
        self._watch: asyncio.Task[None] | None = None
        self.applied = 0

    async def start(self) -> None:
        self.bus.attach(self)

    async def close(self, timeout_s: float = 5.0) -> None:
        self.bus.detach(self)
        await self.bus_lost()

    async def bus_connected(self, connection: BusConnection) -> None:
        await self.bus_lost()
        self._watch = asyncio.create_task(self._follow(connection), name="erasure-watch")

    async def bus_lost(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _follow(self, connection: BusConnection) -> None:
        backoff = Backoff(0.5, 10.0)
        while connection.usable:
            try:
                kv = await connection.jetstream().key_value(ERASURES_BUCKET)
                watcher: Any = await kv.watchall()
            except BucketNotFoundError:
                await backoff.sleep(connection.lost)
                continue
            backoff.reset()
            try:
                while True:
                    try:
                        entry = await watcher.updates(timeout=60.0)
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None or getattr(entry, "value", None) is None:
                        continue
                    user_id = json.loads(entry.value).get("user_id")
                    if isinstance(user_id, str):
                        await self.users.erase_here(user_id)
                        self.applied += 1
            except Exception as exc:
                log.warning("following erasures failed: %s", describe_error(exc))
                await backoff.sleep(connection.lost)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(watcher.stop(), 1.0)
