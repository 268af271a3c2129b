"""A stalled Redis (redis-server under SIGSTOP) against a real edge: answers keep coming
from local state, events keep being accepted and spooled, the breaker opens, and
everything is written through once Redis runs again."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from edge_node.breaker import BreakerState
from edge_node.sessions import KEY_PREFIX
from protocol.codec import decode_msgpack_event
from protocol.window import SessionWindow
from tests.edge_node.conftest import EdgeFactory, EdgeServer
from tests.servers import RedisServer
from tests.support import eventually

# A correctness bound, not a benchmark: with Redis's 5 s default timeouts and no breaker, a
# request took 5 s or never finished while Redis was stopped.
ANSWER_BOUND_S = 2.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: it is stopped with SIGSTOP, the shared one never."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)
        server.close()


def view(session_id: str, item_id: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": item_id,
        "ts": int(time.time() * 1000),
    }


def spooled_event_ids(edge: EdgeServer) -> set[str]:
    spool = edge.app.state.edge.uplink.spool
    ids: set[str] = set()
    try:
        while records := spool.read():
            ids.update(decode_msgpack_event(r.payload).event_id for r in records)
    finally:
        spool.rewind()
    return ids


async def timed(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
    started = time.monotonic()
    response = await client.request(method, url, **kw)
    assert time.monotonic() - started < ANSWER_BOUND_S, f"{method} {url} waited on redis"
    return response


async def test_a_stopped_redis_stalls_no_answer_and_loses_no_event(
    edge_factory: EdgeFactory, private_redis: RedisServer
) -> None:
    edge = edge_factory(
        redis=private_redis.url, redis_breaker_cooldown_s=0.5, redis_feed_ping_s=0.2
    )
    store = edge.app.state.edge.sessions
    pid = private_redis.pid
    assert pid is not None
    await eventually(lambda: store.feed_up, "the invalidation feed to subscribe")
    before, during = f"before-{uuid.uuid4().hex[:8]}", f"during-{uuid.uuid4().hex[:8]}"
    posted: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:
        first = view(before, "i001")
        assert (await client.post(f"{edge.url}/v1/events", json=first)).status_code == 202
        posted.append(first["event_id"])

        os.kill(pid, signal.SIGSTOP)
        try:
            for n in range(8):
                event = view(during, f"i{n + 2:03d}")
                accepted = await timed(client, "POST", f"{edge.url}/v1/events", json=event)
                assert accepted.status_code == 202, accepted.text
                posted.append(event["event_id"])
                for session_id in (during, before):
                    answer = await timed(
                        client,
                        "GET",
                        f"{edge.url}/v1/recommendations",
                        params={"session_id": session_id},
                    )
                    assert answer.status_code == 200, answer.text
                    assert not answer.json()["cold"], "answered without the local window"
            assert store.breaker.state is not BreakerState.CLOSED
            assert store.redis_skipped > 0
            assert store.unsynced >= 1
            metrics = (await client.get(f"{edge.url}/metrics")).text
            assert "proxima_edge_redis_breaker_state 0.0" not in metrics
            assert 'proxima_edge_redis_errors_total{op="' in metrics
            await eventually(lambda: not store.feed_up, "the feed to notice the stall")
        finally:
            os.kill(pid, signal.SIGCONT)

        # Redis runs again: the breaker closes, what changed meanwhile is written through.
        await eventually(
            lambda: store.unsynced == 0 and store.breaker.state is BreakerState.CLOSED,
            "the windows changed during the stall to be written through",
        )
        redis = aioredis.from_url(private_redis.url)
        try:
            stored = await redis.get(KEY_PREFIX + during)
        finally:
            await redis.aclose()
        assert isinstance(stored, bytes)
        assert len(SessionWindow.from_msgpack(stored)) == 8
        after = await client.get(f"{edge.url}/v1/recommendations", params={"session_id": during})
        assert after.status_code == 200 and not after.json()["cold"]

    assert spooled_event_ids(edge) >= set(posted)  # every event went to the uplink
