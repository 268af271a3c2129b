"""Token buckets, and the per-session and per-address limits they enforce over HTTP and WS."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from edge_node.ratelimit import TokenBuckets
from tests.edge_node.conftest import EdgeFactory


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


# -- TokenBuckets -------------------------------------------------------------------------


def test_a_new_key_may_spend_its_burst_at_once() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=10, clock=FakeClock())
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)  # one token at two a second


def test_tokens_refill_at_the_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=10, clock=clock)
    for _ in range(3):
        buckets.take("k")
    clock.now_s += 0.25  # half a token back
    assert buckets.take("k") == pytest.approx(0.25)
    clock.now_s += 0.25
    assert buckets.take("k") == 0.0
    assert buckets.take("k") == pytest.approx(0.5)


def test_a_refused_take_spends_nothing() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=10, clock=clock)
    assert buckets.take("k") == 0.0
    for _ in range(5):
        assert buckets.take("k") == pytest.approx(1.0)
    clock.now_s += 1.0
    assert buckets.take("k") == 0.0


def test_refill_stops_at_the_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=10.0, burst=2, max_keys=10, clock=clock)
    buckets.take("k")
    clock.now_s += 3_600
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.1)


def test_a_take_may_cost_several_tokens() -> None:
    buckets = TokenBuckets(rate=4.0, burst=5, max_keys=10, clock=FakeClock())
    assert buckets.take("k", cost=3) == 0.0
    assert buckets.take("k", cost=3) == pytest.approx(0.25)  # has 2, needs 3
    assert buckets.take("k", cost=2) == 0.0


def test_keys_are_limited_independently() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=10, clock=FakeClock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_beyond_max_keys_the_least_recently_used_key_is_forgotten() -> None:
    buckets = TokenBuckets(rate=0.001, burst=1, max_keys=2, clock=FakeClock())
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0
    assert buckets.take("a") > 0  # "a" is now the most recently used, "b" the oldest
    assert buckets.take("c") == 0.0
    assert len(buckets) == 2
    assert buckets.take("a") > 0  # still remembered, still empty
    assert buckets.take("b") == 0.0  # forgotten: a full bucket again
    assert len(buckets) == 2


# -- over HTTP and WebSocket --------------------------------------------------------------


def event(session_id: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": "i001",
        "ts": int(time.time() * 1000),
    }


def assert_error_body(response: httpx.Response, code: str) -> None:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "field"}


def retry_after_s(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isdigit()
    return int(value)


async def test_recommendations_over_the_session_limit_get_429_with_retry_after(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory(session_rate=0.01, session_burst=2)
    url = f"{edge.url}/v1/recommendations"
    async with httpx.AsyncClient(timeout=10) as client:
        allowed = [await client.get(url, params={"session_id": "busy"}) for _ in range(2)]
        limited = await client.get(url, params={"session_id": "busy"})
        other = await client.get(url, params={"session_id": "calm"})

    assert [r.status_code for r in allowed] == [200, 200]
    assert limited.status_code == 429
    assert_error_body(limited, "rate_limited")
    assert 90 <= retry_after_s(limited) <= 100  # one token at 0.01 a second
    assert other.status_code == 200


async def test_events_over_the_session_limit_are_rejected_one_by_one(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory(session_rate=0.01, session_burst=3)
    busy = [event("busy") for _ in range(5)]
    calm = [event("calm") for _ in range(2)]
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{edge.url}/v1/events", json=[*busy, *calm])
        retried = await client.post(f"{edge.url}/v1/events", json=busy[3])
        repeated = await client.post(f"{edge.url}/v1/events", json=busy[:3])

    assert response.status_code == 202
    result = response.json()
    assert (result["accepted"], result["duplicate"], result["rejected"]) == (5, 0, 2)
    assert [(r["index"], r["code"]) for r in result["rejections"]] == [
        (3, "rate_limited"),
        (4, "rate_limited"),
    ]

    # One event on its own over the limit is answered as a whole: 429, like a GET.
    assert retried.status_code == 429
    assert_error_body(retried, "rate_limited")
    assert retry_after_s(retried) >= 1

    # Tokens are taken per event, duplicates included: the limit counts work, not news.
    assert repeated.status_code == 202
    assert repeated.json()["rejected"] == 3


async def test_requests_over_the_address_limit_get_429(edge_factory: EdgeFactory) -> None:
    edge = edge_factory(ip_rate=0.01, ip_burst=3)
    async with httpx.AsyncClient(timeout=10) as client:
        allowed = [await client.get(f"{edge.url}/healthz") for _ in range(3)]
        limited = await client.post(f"{edge.url}/v1/events", json=event("any"))
        also_limited = await client.get(f"{edge.url}/readyz")

    assert [r.status_code for r in allowed] == [200, 200, 200]
    for response in (limited, also_limited):
        assert response.status_code == 429
        assert_error_body(response, "rate_limited")
        assert 90 <= retry_after_s(response) <= 100
    registry = edge.app.state.edge.metrics.registry
    labels = {"reason": "client_rate"}
    assert registry.get_sample_value("proxima_edge_rejections_total", labels) == 2


async def test_websockets_over_the_address_limit_are_closed_with_1013(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory(ip_rate=0.01, ip_burst=1)
    stream_url = f"{edge.ws_url}/v1/stream?session_id=ws-limited"
    async with connect(stream_url) as allowed:
        first = await allowed.recv()
        assert '"type":"recommendations"' in str(first)

    async with connect(stream_url) as limited:
        with pytest.raises(ConnectionClosed) as closed:
            await limited.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
    assert closed.value.rcvd.reason == "rate limited"
