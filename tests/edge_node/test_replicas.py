"""Two replicas of one region share session windows through Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from edge_node.feedback import IssuedAnswer
from edge_node.sessions import INVALIDATION_CHANNEL, KEY_PREFIX
from tests.edge_node.conftest import EdgeFactory, EdgeServer

POLL_INTERVAL_S = 0.1  # slower than the per-session refill rate
POLL_DEADLINE_S = 10.0


def event(session_id: str, event_type: str, item_id: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": event_type,
        "item_id": item_id,
        "ts": int(time.time() * 1000),
    }


async def recommend(client: httpx.AsyncClient, edge: EdgeServer, session_id: str) -> dict[str, Any]:
    response = await client.get(
        f"{edge.url}/v1/recommendations", params={"session_id": session_id, "k": 20}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def item_ids(answer: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


async def post_event(client: httpx.AsyncClient, edge: EdgeServer, body: dict[str, Any]) -> None:
    response = await client.post(f"{edge.url}/v1/events", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1


async def wait_for_invalidation_feed(
    client: httpx.AsyncClient, edge: EdgeServer, redis_client: aioredis.Redis, item_id: str
) -> None:
    """Returns once ``edge`` drops its local copy of a window when told to.

    The edge subscribes in the background after start-up. The probe session is cached on
    the edge with one view (so it answers ranked from its local copy) and deleted from
    Redis: only an invalidation makes the edge read it through again and answer cold.
    """
    probe = f"probe-{uuid.uuid4().hex}"
    await post_event(client, edge, event(probe, "view", item_id))
    assert not (await recommend(client, edge, probe))["cold"]
    await redis_client.delete(KEY_PREFIX + probe)
    deadline = time.monotonic() + POLL_DEADLINE_S
    while not (await recommend(client, edge, probe))["cold"]:
        assert time.monotonic() < deadline, "the edge never acted on an invalidation"
        await redis_client.publish(INVALIDATION_CHANNEL, f"eu/prober|{probe}")
        await asyncio.sleep(POLL_INTERVAL_S)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_an_event_on_one_replica_changes_the_next_answer_of_the_other(
    edge_factory: EdgeFactory, redis_url: str, redis_client: aioredis.Redis
) -> None:
    edge_a = edge_factory(redis=redis_url, node="a")
    edge_b = edge_factory(redis=redis_url, node="b")
    tables = edge_a.app.state.edge.models.current.tables
    viewed = tables.item_ids[0]

    async with httpx.AsyncClient(timeout=10) as client:
        await wait_for_invalidation_feed(client, edge_b, redis_client, viewed)
        session_id = f"replicas-{uuid.uuid4().hex}"

        first = await recommend(client, edge_b, session_id)
        assert first["cold"]
        assert issued_by(edge_b, first, session_id)

        await post_event(client, edge_a, event(session_id, "view", viewed))
        # B never held this session: it reads A's window through from Redis and keeps it.
        ranked = await recommend(client, edge_b, session_id)
        assert not ranked["cold"]
        assert item_ids(ranked) != item_ids(first)
        assert issued_by(edge_b, ranked, session_id)

        # A purchase on A: bought items are never recommended, so once B drops its stale
        # copy and reads the fresh window, the item leaves B's answer.
        bought = item_ids(ranked)[0]
        await post_event(client, edge_a, event(session_id, "purchase", bought))
        assert bought not in item_ids(await recommend(client, edge_a, session_id))

        deadline = time.monotonic() + POLL_DEADLINE_S
        answer = await recommend(client, edge_b, session_id)
        while bought in item_ids(answer):
            assert time.monotonic() < deadline, "B kept answering from its stale copy"
            await asyncio.sleep(POLL_INTERVAL_S)
            answer = await recommend(client, edge_b, session_id)
        assert not answer["cold"]
        assert issued_by(edge_b, answer, session_id)

    sessions_b = edge_b.app.state.edge.sessions
    assert sessions_b.redis_errors == 0
    assert edge_a.app.state.edge.sessions.redis_errors == 0


async def test_an_event_on_the_other_replica_is_not_a_duplicate_there(
    edge_factory: EdgeFactory, redis_url: str
) -> None:
    """A client retrying on another replica after a lost answer is recognised."""
    edge_a = edge_factory(redis=redis_url, node="a")
    edge_b = edge_factory(redis=redis_url, node="b")
    item = edge_a.app.state.edge.models.current.tables.item_ids[1]
    body = event(f"retry-{uuid.uuid4().hex}", "view", item)

    async with httpx.AsyncClient(timeout=10) as client:
        first = await client.post(f"{edge_a.url}/v1/events", json=body)
        retried = await client.post(f"{edge_b.url}/v1/events", json=body)

    assert first.status_code == retried.status_code == 202
    assert first.json()["accepted"] == 1
    assert retried.json()["accepted"] == 0
    assert retried.json()["duplicate"] == 1


def issued_by(edge: EdgeServer, answer: dict[str, Any], session_id: str) -> bool:
    """Whether ``edge`` gave ``answer``: only its secret makes a request id that verifies."""
    verdict = edge.app.state.edge.recommender.feedback.verify(answer["request_id"], session_id)
    return isinstance(verdict, IssuedAnswer)
