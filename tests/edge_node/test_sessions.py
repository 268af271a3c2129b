"""SessionStore: the local LRU, expiry, and sharing windows through a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis

from edge_node.breaker import BreakerState
from edge_node.sessions import INVALIDATION_CHANNEL, KEY_PREFIX, SessionStore
from protocol.events import Event, EventType
from protocol.window import SessionWindow, WindowConfig
from tests.servers import RedisServer

SPAN_MS = 60_000
CONFIG = WindowConfig(span_ms=SPAN_MS, max_events=50)
POLL_INTERVAL_S = 0.02
POLL_DEADLINE_S = 10.0


class FakeClock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def unique_session(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def make_event(
    session_id: str,
    received_at_ms: int,
    *,
    item_id: str = "i001",
    event_type: EventType = "view",
) -> Event:
    return Event(
        event_id=uuid.uuid4().hex,
        session_id=session_id,
        type=event_type,
        ts=received_at_ms,
        item_id=item_id,
        received_at=received_at_ms,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def local_store(
    *,
    max_sessions: int = 1_000,
    max_bytes: int = 1 << 30,
    clock: Callable[[], float] = time.time,
) -> SessionStore:
    return SessionStore(
        CONFIG, max_sessions=max_sessions, max_bytes=max_bytes, node_id="eu/local", clock=clock
    )


async def add_events(store: SessionStore, session_id: str, count: int, at_ms: int) -> SessionWindow:
    window = await store.get_or_create(session_id)
    for n in range(count):
        window.add(make_event(session_id, at_ms + n, item_id=f"i{n:03d}"))
    await store.saved(window)
    return window


async def eventually(condition: Callable[[], object], what: str) -> None:
    """Polls an awaitable-returning ``condition`` until it is truthy, within a deadline."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


async def window_in_redis(client: aioredis.Redis, session_id: str) -> SessionWindow:
    stored = await client.get(KEY_PREFIX + session_id)
    assert isinstance(stored, bytes), f"no window for {session_id} in Redis"
    return SessionWindow.from_msgpack(stored, CONFIG)


async def wait_until_listening(store: SessionStore, client: aioredis.Redis) -> None:
    """Returns once ``store`` acts on invalidations (its subscription is asynchronous)."""
    probe = unique_session("probe")
    await store.get_or_create(probe)  # held locally only, never written to Redis

    async def probe_dropped() -> bool:
        await client.publish(INVALIDATION_CHANNEL, f"eu/prober|{probe}")
        return await store.get(probe) is None

    await eventually(probe_dropped, "the store to subscribe to invalidations")


# -- local cache --------------------------------------------------------------------------


async def test_get_returns_none_for_an_unknown_session() -> None:
    store = local_store()
    assert await store.get("never-seen") is None
    assert len(store) == 0


async def test_get_or_create_keeps_the_new_window() -> None:
    store = local_store()
    created = await store.get_or_create("s1")
    assert len(created) == 0
    assert await store.get("s1") is created
    assert await store.get_or_create("s1") is created
    assert len(store) == 1


async def test_count_limit_evicts_the_least_recently_used_session() -> None:
    store = local_store(max_sessions=3)
    for session_id in ("a", "b", "c"):
        await add_events(store, session_id, 1, now_ms())
    assert await store.get("a") is not None  # "a" is now the most recently used
    await add_events(store, "d", 1, now_ms())
    assert len(store) == 3
    assert store.evictions == 1
    assert await store.get("b") is None
    for kept in ("a", "c", "d"):
        assert await store.get(kept) is not None


async def test_byte_limit_evicts_oldest_sessions_and_keeps_the_estimate_consistent() -> None:
    probe = local_store()
    await add_events(probe, "e", 0, now_ms())  # ids as long as those below: sizes match
    empty_window_bytes = probe.bytes
    await add_events(probe, "o", 1, now_ms())
    entry_bytes = probe.bytes - 2 * empty_window_bytes
    assert 0 < entry_bytes < empty_window_bytes / 2

    store = local_store(max_bytes=int(empty_window_bytes * 3.5))
    for session_id in ("a", "b", "c"):
        await store.get_or_create(session_id)
    assert len(store) == 3
    assert store.evictions == 0
    assert store.bytes == 3 * empty_window_bytes

    # "c" grows by about one empty window's worth of events: only the oldest makes room.
    await add_events(store, "c", -(-empty_window_bytes // entry_bytes), now_ms())
    assert store.evictions == 1
    assert await store.get("a") is None
    assert await store.get("b") is not None
    assert await store.get("c") is not None
    assert store.bytes <= store.max_bytes
    assert store.bytes > 2 * empty_window_bytes


async def test_a_single_window_over_the_byte_limit_is_kept() -> None:
    probe = local_store()
    await add_events(probe, "x", 0, now_ms())
    store = local_store(max_bytes=probe.bytes)
    window = await add_events(store, "big", 30, now_ms())
    assert len(store) == 1
    assert await store.get("big") is window


async def test_a_window_idle_longer_than_its_span_is_dropped_on_access() -> None:
    start_s = 1_800_000_000.0
    clock = FakeClock(start_s)
    store = local_store(clock=clock)
    await add_events(store, "idle", 2, int(start_s * 1000))
    last_event_ms = int(start_s * 1000) + 1

    clock.now_s = (last_event_ms + SPAN_MS) / 1000  # exactly one span later: still live
    assert await store.get("idle") is not None

    clock.now_s = (last_event_ms + SPAN_MS + 1) / 1000
    assert await store.get("idle") is None
    assert len(store) == 0
    assert store.bytes == 0
    fresh = await store.get_or_create("idle")
    assert len(fresh) == 0


async def test_an_empty_window_does_not_expire() -> None:
    clock = FakeClock(1_800_000_000.0)
    store = local_store(clock=clock)
    window = await store.get_or_create("empty")
    clock.now_s += 10 * SPAN_MS / 1000
    assert await store.get("empty") is window


# -- with Redis ---------------------------------------------------------------------------


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def store_factory(redis_url: str) -> AsyncIterator[Callable[[str], SessionStore]]:
    """Stores sharing the test Redis, each with its own client; all closed at the end."""
    stores: list[SessionStore] = []
    clients: list[aioredis.Redis] = []

    def make(node_id: str) -> SessionStore:
        client = aioredis.from_url(redis_url)
        clients.append(client)
        store = SessionStore(
            CONFIG, max_sessions=1_000, max_bytes=1 << 30, node_id=node_id, redis=client
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
    for client in clients:
        await client.aclose()


async def test_saved_writes_the_window_with_a_ttl_of_one_span(
    store_factory: Callable[[str], SessionStore], redis_client: aioredis.Redis
) -> None:
    store = store_factory("eu/a")
    session_id = unique_session("ttl")
    window = await add_events(store, session_id, 3, now_ms())

    restored = await window_in_redis(redis_client, session_id)
    assert list(restored.entries) == list(window.entries)
    ttl_ms = await redis_client.pttl(KEY_PREFIX + session_id)
    assert SPAN_MS - 10_000 < ttl_ms <= SPAN_MS
    assert store.redis_errors == 0


async def test_another_node_reads_a_window_through_on_a_miss(
    store_factory: Callable[[str], SessionStore],
) -> None:
    writer, reader = store_factory("eu/a"), store_factory("eu/b")
    session_id = unique_session("through")
    written = await add_events(writer, session_id, 4, now_ms())

    assert len(reader) == 0
    read = await reader.get(session_id)
    assert read is not None
    assert read is not written
    assert list(read.entries) == list(written.entries)
    assert len(reader) == 1  # cached locally from now on

    retried = make_event(session_id, now_ms())
    written.add(retried)
    await writer.saved(written)
    assert await reader.get(session_id) is read  # no invalidation listener: stays cached
    fresh_reader = store_factory("eu/c")
    reread = await fresh_reader.get(session_id)
    assert reread is not None and reread.has_seen(retried.event_id)


async def test_a_save_on_one_node_invalidates_the_stale_copy_on_another(
    store_factory: Callable[[str], SessionStore], redis_client: aioredis.Redis
) -> None:
    writer, reader = store_factory("eu/a"), store_factory("eu/b")
    await writer.start()
    await reader.start()
    await wait_until_listening(reader, redis_client)
    await wait_until_listening(writer, redis_client)

    session_id = unique_session("stale")
    window = await add_events(writer, session_id, 1, now_ms())
    stale = await reader.get(session_id)
    assert stale is not None and len(stale) == 1

    window.add(make_event(session_id, now_ms(), item_id="i777", event_type="purchase"))
    await writer.saved(window)

    async def reader_sees_the_purchase() -> bool:
        current = await reader.get(session_id)
        return current is not None and "i777" in current.bought

    await eventually(reader_sees_the_purchase, "the reader to drop its stale copy")
    assert await writer.get(session_id) is window  # its own message does not drop it
    assert reader.redis_errors == 0


@pytest.mark.parametrize(
    "stored_value",
    [
        pytest.param(b"\xc1 not msgpack", id="not-msgpack"),
        pytest.param(msgpack.packb([99, "x", [], [], [], []]), id="unknown-format"),
        pytest.param(
            msgpack.packb([1, "x", [["ts", 0, None, None, None]], [], [], []]), id="bad-entry"
        ),
        pytest.param(msgpack.packb({"a": 1}), id="wrong-shape"),
        pytest.param(msgpack.packb([1, "x", 5, [], [], []]), id="entries-not-a-list"),
        pytest.param(msgpack.packb(None), id="nil"),
    ],
)
async def test_a_malformed_window_in_redis_is_treated_as_a_new_session(
    store_factory: Callable[[str], SessionStore],
    redis_client: aioredis.Redis,
    stored_value: bytes,
) -> None:
    store = store_factory("eu/a")
    session_id = unique_session("malformed")
    await redis_client.set(KEY_PREFIX + session_id, stored_value, px=SPAN_MS)

    assert await store.get(session_id) is None
    window = await store.get_or_create(session_id)
    assert len(window) == 0
    window.add(make_event(session_id, now_ms()))
    await store.saved(window)  # overwrites the bad value with a good one
    assert len(await window_in_redis(redis_client, session_id)) == 1


async def test_the_store_keeps_serving_locally_while_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = aioredis.from_url(server.url)
    store = SessionStore(
        CONFIG, max_sessions=1_000, max_bytes=1 << 30, node_id="eu/a", redis=client
    )
    try:
        await store.start()
        await wait_until_listening(store, client)
        before = unique_session("before")
        await add_events(store, before, 2, now_ms())

        server.stop()
        # The invalidation feed notices first (nothing else talks to Redis meanwhile).
        await eventually(lambda: store.redis_errors >= 1, "the store to notice the outage")

        during = unique_session("during")
        window = await add_events(store, during, 2, now_ms())
        errors_after_save = store.redis_errors
        assert errors_after_save >= 2  # the failed write-through is counted, not raised

        # The feed keeps retrying in the background; local windows must survive that.
        await eventually(lambda: store.redis_errors >= errors_after_save + 2, "the feed to retry")
        assert await store.get(during) is window
        window.add(make_event(during, now_ms()))
        await store.saved(window)
        assert len(window) == 3
        assert await store.get(during) is window

        # An unknown session starts empty; by now the breaker is open, so Redis is not asked.
        assert store.breaker.state is not BreakerState.CLOSED
        tries_before_read = store.redis_errors + store.redis_skipped
        fresh = await store.get_or_create(unique_session("new"))
        assert len(fresh) == 0
        assert store.redis_errors + store.redis_skipped > tries_before_read
    finally:
        await store.close()
        await client.aclose()
        server.close()


async def test_the_store_writes_through_again_once_redis_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = aioredis.from_url(server.url)
    store = SessionStore(
        CONFIG, max_sessions=1_000, max_bytes=1 << 30, node_id="eu/a", redis=client
    )
    try:
        await store.start()
        await wait_until_listening(store, client)
        server.stop()
        await eventually(lambda: store.redis_errors >= 1, "the store to notice the outage")

        server.start()
        await wait_until_listening(store, client)
        session_id = unique_session("back")
        window = await add_events(store, session_id, 2, now_ms())
        stored = await window_in_redis(client, session_id)
        assert list(stored.entries) == list(window.entries)
    finally:
        await store.close()
        await client.aclose()
        server.close()
