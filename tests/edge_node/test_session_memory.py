"""Session memory is counted as what the allocator really hands out, and the event route
opens no window for what does not belong in one."""

from __future__ import annotations

import dataclasses
import gc
import json
import time
import tracemalloc
import uuid
from typing import Any

import httpx
import pytest

from edge_node.sessions import SessionStore
from protocol.codec import decode_body
from protocol.window import WindowConfig
from tests.edge_node.conftest import EdgeFactory

WINDOWS = 200
TOLERANCE = 0.30  # the estimate must be within 30% of the measured bytes


def impressions(session_id: str, now_ms: int) -> list[dict[str, Any]]:
    # One view opens the window; then a page shows recommendations a hundred times.
    first = {"type": "view", "item_id": "item-00001", "category": "shoes", "price": 19.5}
    shown = [
        {
            "type": "impression",
            "items": [f"item-{j:05d}" for j in range(10)],
            "request_id": f"r-{uuid.uuid4().hex}",
        }
        for _ in range(100)
    ]
    return _stamped(session_id, now_ms, [first, *shown])


def views(session_id: str, now_ms: int) -> list[dict[str, Any]]:
    return _stamped(
        session_id,
        now_ms,
        [
            {"type": "view", "item_id": f"item-{n:05d}", "category": f"cat-{n % 8}", "price": 10.0}
            for n in range(50)
        ],
    )


def mixed(session_id: str, now_ms: int) -> list[dict[str, Any]]:
    kinds = ("view", "click", "add_to_cart", "search", "impression", "purchase", "view")
    events: list[dict[str, Any]] = []
    for n in range(140):  # more than the window keeps: expiry and eviction of ids as well
        kind = kinds[n % len(kinds)]
        event: dict[str, Any] = {"type": kind}
        if kind == "search":
            event["query"] = f"red shoes {n}"
        elif kind == "impression":
            event["items"] = [f"item-{j:05d}" for j in range(5)]
        else:
            event["item_id"] = f"item-{n % 23:05d}"
            event["category"] = f"cat-{n % 3}"
            if n % 2:
                event["price"] = 5.0 + n
        events.append(event)
    return _stamped(session_id, now_ms, events)


def _stamped(session_id: str, now_ms: int, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"event_id": uuid.uuid4().hex, "session_id": session_id, "ts": now_ms + n, **event}
        for n, event in enumerate(events)
    ]


@pytest.mark.parametrize("make", [impressions, views, mixed], ids=lambda f: f.__name__)
def test_the_byte_count_tracks_the_memory_windows_really_take(make: Any) -> None:
    now_ms = int(time.time() * 1000)
    # The bodies exist before measuring; what the store keeps of them is decoded inside.
    bodies = [
        json.dumps(make(f"s-{n:04d}-{uuid.uuid4().hex[:8]}", now_ms)).encode()
        for n in range(WINDOWS)
    ]
    store = SessionStore(
        WindowConfig(), max_sessions=10 * WINDOWS, max_bytes=1 << 40, node_id="eu/mem"
    )
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            batch = decode_body(body, "json")
            window = store.create(batch.events[0].session_id)
            for event in batch.events:
                window.add(dataclasses.replace(event, received_at=event.ts))
            store._put(window.session_id, window)  # as saved() does, without Redis
            del batch, event, window
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()

    assert len(store) == WINDOWS
    ratio = store.bytes / measured
    assert 1 - TOLERANCE <= ratio <= 1 + TOLERANCE, (
        f"counted {store.bytes / WINDOWS:.0f} B a window, measured {measured / WINDOWS:.0f} B"
    )


def test_the_byte_limit_holds_what_the_count_says() -> None:
    """Evicting by counted bytes keeps the store's real memory near the limit."""
    now_ms = int(time.time() * 1000)
    limit = 2 << 20
    store = SessionStore(WindowConfig(), max_sessions=1_000_000, max_bytes=limit, node_id="eu/m")
    bodies = [json.dumps(views(f"v-{n:05d}", now_ms)).encode() for n in range(300)]
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            batch = decode_body(body, "json")
            window = store.create(batch.events[0].session_id)
            for event in batch.events:
                window.add(dataclasses.replace(event, received_at=event.ts))
            store._put(window.session_id, window)
            del batch, event, window
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert store.evictions > 0
    assert store.bytes <= limit
    assert measured <= limit * (1 + TOLERANCE)


# -- what opens a window -------------------------------------------------------------------


async def test_impressions_alone_and_refused_events_open_no_window(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory()
    sessions = edge.app.state.edge.sessions
    now_ms = int(time.time() * 1000)
    shown = f"shown-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        impression = _stamped(shown, now_ms, [{"type": "impression", "items": ["a", "b"]}])
        response = await client.post(f"{edge.url}/v1/events", json=impression[0])
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 1

        invalid = {"event_id": "short", "session_id": f"bad-{uuid.uuid4().hex[:8]}"}
        assert (await client.post(f"{edge.url}/v1/events", json=invalid)).status_code == 400

        viewed = f"viewed-{uuid.uuid4().hex[:8]}"
        accepted = await client.post(f"{edge.url}/v1/events", json=views(viewed, now_ms)[0])
        assert accepted.status_code == 202

    assert await sessions.get(shown) is None
    assert await sessions.get(invalid["session_id"]) is None
    assert await sessions.get(viewed) is not None
    assert len(sessions) == 1


async def test_events_the_uplink_refuses_open_no_window(edge_factory: EdgeFactory) -> None:
    edge = edge_factory(spool_max_bytes=1)
    sessions = edge.app.state.edge.sessions
    refused_session = f"refused-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{edge.url}/v1/events", json=views(refused_session, int(time.time() * 1000))[:3]
        )
    assert response.status_code == 503, response.text
    assert await sessions.get(refused_session) is None
    assert len(sessions) == 0
