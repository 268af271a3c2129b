"""Protection of the edge: concurrency cap, CORS, API keys, a full spool, an overloaded uplink."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from edge_node.uplink import Spool
from protocol.codec import decode_msgpack_event
from tests.edge_node.conftest import EdgeFactory, EdgeServer

POLL_INTERVAL_S = 0.01
POLL_DEADLINE_S = 10.0


def event(session_id: str, item_id: str = "i001") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": item_id,
        "ts": int(time.time() * 1000),
    }


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def spooled_event_ids(spool_dir: Path) -> list[str]:
    """Every event in a spool no process holds any more, oldest first."""
    event_ids: list[str] = []
    with Spool(spool_dir) as spool:
        while records := spool.read():
            event_ids.extend(decode_msgpack_event(r.payload).event_id for r in records)
    return event_ids


# -- concurrency ----------------------------------------------------------------------------


class HeldUpload:
    """A chunked POST /v1/events whose body stays incomplete until released."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.release = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        half = len(self.body) // 2
        yield self.body[:half]
        await self.release.wait()
        yield self.body[half:]


async def test_requests_beyond_the_concurrency_limit_get_503_with_retry_after(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory(max_concurrency=1)
    upload = HeldUpload(json.dumps(event("held")).encode())
    async with (
        httpx.AsyncClient(timeout=10) as held_client,
        httpx.AsyncClient(timeout=10) as client,
    ):
        held = asyncio.create_task(
            held_client.post(
                f"{edge.url}/v1/events",
                content=upload.chunks(),
                headers={"content-type": "application/json"},
            )
        )
        # Once the held upload is inside the app, every other request is refused at once.
        deadline = time.monotonic() + POLL_DEADLINE_S
        refused = await client.get(f"{edge.url}/v1/model")
        while refused.status_code == 200:
            assert time.monotonic() < deadline, "the held upload never counted as in flight"
            await asyncio.sleep(POLL_INTERVAL_S)
            refused = await client.get(f"{edge.url}/v1/model")

        assert_error(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "1"
        also_refused = await client.get(
            f"{edge.url}/v1/recommendations", params={"session_id": "other"}
        )
        assert_error(also_refused, 503, "overloaded")
        # Probes and scrapes are served outside the cap.
        for path in ("/healthz", "/readyz", "/metrics"):
            probe = await client.get(f"{edge.url}{path}")
            assert probe.status_code == 200, path

        upload.release.set()
        finished = await held
        assert finished.status_code == 202
        assert finished.json()["accepted"] == 1
        after = await client.get(f"{edge.url}/healthz")
        assert after.status_code == 200


# -- CORS -------------------------------------------------------------------------------------

SHOP = "https://shop.example"


async def test_cors_allows_the_configured_origin_only(edge_factory: EdgeFactory) -> None:
    edge = edge_factory(cors_origins=(SHOP,))
    async with httpx.AsyncClient(timeout=10) as client:
        allowed = await client.get(
            f"{edge.url}/v1/recommendations", params={"session_id": "c"}, headers={"origin": SHOP}
        )
        other = await client.get(
            f"{edge.url}/v1/recommendations",
            params={"session_id": "c"},
            headers={"origin": "https://evil.example"},
        )
        error = await client.post(
            f"{edge.url}/v1/events",
            content=b"x",
            headers={"origin": SHOP, "content-type": "application/xml"},
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    # Browsers can only read an error answer that carries the header too.
    assert_error(error, 415, "unsupported_media_type")
    assert error.headers["access-control-allow-origin"] == SHOP


async def test_cors_preflight_answers_for_the_configured_origin(edge_factory: EdgeFactory) -> None:
    edge = edge_factory(cors_origins=(SHOP,))
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    async with httpx.AsyncClient(timeout=10) as client:
        allowed = await client.options(
            f"{edge.url}/v1/events", headers={"origin": SHOP, **preflight}
        )
        refused = await client.options(
            f"{edge.url}/v1/events", headers={"origin": "https://evil.example", **preflight}
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "content-type" in allowed.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


async def test_without_cors_origins_no_cors_headers_are_sent(edge_factory: EdgeFactory) -> None:
    edge = edge_factory()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{edge.url}/healthz", headers={"origin": SHOP})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


# -- API keys ---------------------------------------------------------------------------------


@pytest.fixture
def keyed_edge(edge_factory: EdgeFactory) -> EdgeServer:
    return edge_factory(api_keys=("k1",))


async def post_msgpack(
    client: httpx.AsyncClient, edge: EdgeServer, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = msgpack.packb(event("server-side"))
    return await client.post(
        f"{edge.url}/v1/events",
        content=body,
        headers={"content-type": "application/msgpack", **(headers or {})},
    )


async def test_msgpack_without_an_api_key_is_refused(keyed_edge: EdgeServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await post_msgpack(client, keyed_edge)
    assert_error(response, 401, "missing_api_key")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-proxima-key": "k2"}, id="x-proxima-key"),
        pytest.param({"authorization": "Bearer k2"}, id="bearer"),
        pytest.param({"x-proxima-key": ""}, id="empty"),
        pytest.param({"x-proxima-key": "k1k1"}, id="longer"),
    ],
)
async def test_a_wrong_api_key_is_refused(keyed_edge: EdgeServer, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await post_msgpack(client, keyed_edge, headers)
    assert_error(response, 401, "bad_api_key")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-proxima-key": "k1"}, id="x-proxima-key"),
        pytest.param({"authorization": "Bearer k1"}, id="bearer"),
        pytest.param({"authorization": "bearer k1"}, id="bearer-lowercase"),
    ],
)
async def test_a_known_api_key_is_accepted(keyed_edge: EdgeServer, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await post_msgpack(client, keyed_edge, headers)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1


async def test_json_needs_a_key_too_when_the_edge_has_keys(keyed_edge: EdgeServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        without = await client.post(f"{keyed_edge.url}/v1/events", json=event("browser"))
        wrong = await client.post(
            f"{keyed_edge.url}/v1/events", json=event("browser"), headers={"x-proxima-key": "nope"}
        )
        right = await client.post(
            f"{keyed_edge.url}/v1/events", json=event("browser"), headers={"x-proxima-key": "k1"}
        )
    assert_error(without, 401, "missing_api_key")
    assert_error(wrong, 401, "bad_api_key")
    assert right.status_code == 202


# -- a full spool -----------------------------------------------------------------------------


async def test_a_full_spool_refuses_events_without_taking_them_into_the_window(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory(spool_max_bytes=1_000)
    session_id = f"full-{uuid.uuid4().hex[:8]}"
    url = f"{edge.url}/v1/events"
    accepted: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        refused: httpx.Response | None = None
        refused_event: dict[str, Any] = {}
        for _ in range(50):
            refused_event = event(session_id, "i002")
            response = await client.post(url, json=refused_event)
            if response.status_code != 202:
                refused = response
                break
            assert response.json()["accepted"] == 1
            accepted.append(refused_event)
        assert refused is not None, "the spool never filled up"
        assert accepted, "not even one event fitted in the spool"
        assert_error(refused, 503, "overloaded")
        assert int(refused.headers["retry-after"]) >= 1

        # Still full: the same event again is refused again, not taken as a duplicate.
        again = await client.post(url, json=refused_event)
        assert_error(again, 503, "overloaded")

        # What the publisher does: read and commit. That frees the space.
        spool = edge.app.state.edge.uplink.spool
        records = await asyncio.to_thread(spool.read)
        assert [decode_msgpack_event(r.payload).event_id for r in records] == [
            e["event_id"] for e in accepted
        ]
        await asyncio.to_thread(spool.commit, records[-1].seq)

        retried = await client.post(url, json=refused_event)
        assert retried.status_code == 202
        assert retried.json() == {"accepted": 1, "duplicate": 0, "rejected": 0, "rejections": []}
        # An event that did get in is recognised as a retry.
        duplicate = await client.post(url, json=accepted[0])
        assert duplicate.json()["duplicate"] == 1

    edge.stop()
    assert spooled_event_ids(edge.settings.spool_dir) == [refused_event["event_id"]]


# -- an overloaded uplink ---------------------------------------------------------------------


async def test_an_overloaded_uplink_refuses_batches_and_loses_nothing_it_acknowledged(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory(spool_fsync="always", uplink_max_pending_events=1)
    url = f"{edge.url}/v1/events"
    acknowledged: set[str] = set()
    refused: set[str] = set()
    refusals: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    async def post_batch(client: httpx.AsyncClient, sender: int) -> None:
        batch = [event(f"load-{sender}-{uuid.uuid4().hex[:8]}", f"i{n:03d}") for n in range(20)]
        response = await client.post(url, json=batch)
        ids = {e["event_id"] for e in batch}
        if response.status_code == 202:
            assert response.json()["accepted"] == len(batch)
            acknowledged.update(ids)
        else:
            refusals.append(response)
            refused.update(ids)

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        for _ in range(20):
            await asyncio.gather(*(post_batch(client, sender) for sender in range(48)))
            if refusals:
                break
    assert refusals, "concurrent batches never found the uplink busy"
    assert acknowledged
    for response in refusals:
        assert_error(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1"

    edge.stop()
    stored = spooled_event_ids(edge.settings.spool_dir)
    assert len(stored) == len(set(stored))
    assert set(stored) == acknowledged  # every 202 is on disk; no refused event is
    assert not refused & acknowledged
