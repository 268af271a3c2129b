"""``POST /v1/events`` against a real edge: wire forms, batches, rejections, limits, the spool."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import pytest

from protocol.codec import decode_msgpack_event
from protocol.events import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, Event
from tests.edge_node.conftest import EdgeFactory, EdgeServer

JSON = {"content-type": "application/json"}
POLL_INTERVAL_S = 0.01
POLL_DEADLINE_S = 10.0


def unique_session(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def view(session_id: str, item_id: str = "i001", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": item_id,
        "ts": int(time.time() * 1000),
        **extra,
    }


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if field is not None:
        assert error["field"] == field
    return error


def spooled_events(edge: EdgeServer) -> list[Event]:
    """Every event in the running edge's spool; reads from the start and leaves it as found."""
    spool = edge.app.state.edge.uplink.spool
    events: list[Event] = []
    try:
        while records := spool.read():
            events.extend(decode_msgpack_event(record.payload) for record in records)
    finally:
        spool.rewind()
    return events


async def post_json(client: httpx.AsyncClient, edge: EdgeServer, body: Any) -> httpx.Response:
    return await client.post(f"{edge.url}/v1/events", content=json.dumps(body), headers=JSON)


# -- accepted -----------------------------------------------------------------------------------


async def test_a_single_json_event_is_accepted_with_counts(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await post_json(client, edge, view(unique_session("single")))

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicate": 0, "rejected": 0, "rejections": []}


async def test_a_batch_keeps_the_good_events_and_names_each_bad_one(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("batch")
    no_type = view(session)
    del no_type["type"]
    batch: list[Any] = [
        view(session, "i001"),
        no_type,
        view(session, "i002", event_id="short"),
        view(session, "i003"),
        view(session, "i004", colour="red"),
        42,
        {**view(session), "item_id": None},
        view(session, "i005", price=12.5, category="shoes"),
    ]

    response = await post_json(client, edge, batch)

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (3, 0, 5)
    rejections = {r["index"]: r for r in body["rejections"]}
    assert sorted(rejections) == [1, 2, 4, 5, 6]
    expected = {
        1: ("missing_field", "type"),
        2: ("bad_event_id", "event_id"),
        4: ("unknown_field", "colour"),
        5: ("not_an_object", None),
        6: ("missing_field", "item_id"),
    }
    for index, (code, field) in expected.items():
        rejection = rejections[index]
        assert rejection["code"] == code
        assert rejection.get("field") == field
        assert rejection["message"]
    kept = {e.event_id for e in spooled_events(edge)}
    assert kept == {batch[0]["event_id"], batch[3]["event_id"], batch[7]["event_id"]}


async def test_the_same_batch_again_is_all_duplicate(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("dup")
    batch = [view(session, f"i00{n}") for n in range(1, 5)]

    first = await post_json(client, edge, batch)
    again = await post_json(client, edge, batch)

    assert first.json()["accepted"] == 4
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicate": 4, "rejected": 0, "rejections": []}
    assert len(spooled_events(edge)) == 4


async def test_an_event_repeated_inside_one_batch_is_kept_once(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    event = view(unique_session("twice"))

    response = await post_json(client, edge, [event, event])

    assert response.json() == {"accepted": 1, "duplicate": 1, "rejected": 0, "rejections": []}


@pytest.mark.parametrize("media_type", ["application/msgpack", "application/x-msgpack"])
async def test_a_msgpack_body_is_accepted(
    edge: EdgeServer, client: httpx.AsyncClient, media_type: str
) -> None:
    session = unique_session("msgpack")
    batch = [view(session, "i001"), view(session, "i002", context={"device": "mobile"})]

    response = await client.post(
        f"{edge.url}/v1/events",
        content=msgpack.packb(batch),
        headers={"content-type": media_type},
    )

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    stored = {e.event_id: e for e in spooled_events(edge)}
    assert stored[batch[1]["event_id"]].context == {"device": "mobile"}


async def test_text_plain_json_from_send_beacon_is_accepted(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        f"{edge.url}/v1/events",
        content=json.dumps(view(unique_session("beacon"))),
        headers={"content-type": "text/plain;charset=UTF-8"},
    )

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1


async def test_media_type_parameters_and_case_are_ignored(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        f"{edge.url}/v1/events",
        content=json.dumps(view(unique_session("charset"))),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )

    assert response.status_code == 202, response.text


async def test_accepted_events_are_spooled_stamped_with_arrival_region_and_node(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    event = view(unique_session("stamp"), region="forged", node="forged")
    before_ms = int(time.time() * 1000)

    response = await post_json(client, edge, event)

    after_ms = int(time.time() * 1000)
    assert response.status_code == 202
    [stored] = spooled_events(edge)
    assert stored.event_id == event["event_id"]
    assert stored.session_id == event["session_id"]
    assert stored.item_id == "i001"
    assert stored.ts == event["ts"]
    assert stored.region == edge.settings.region
    assert stored.node == edge.settings.node
    assert stored.received_at is not None
    assert before_ms <= stored.received_at <= after_ms


async def test_events_change_the_sessions_next_recommendations(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("changes")
    url = f"{edge.url}/v1/recommendations"
    cold = (await client.get(url, params={"session_id": session})).json()
    assert cold["cold"] is True
    popular = [item["item_id"] for item in cold["items"]]

    viewed = popular[5]
    accepted = await post_json(client, edge, [view(session, viewed), view(session, popular[7])])
    warm = (await client.get(url, params={"session_id": session})).json()

    assert accepted.json()["accepted"] == 2
    assert warm["cold"] is False
    assert [item["item_id"] for item in warm["items"]] != popular


async def test_the_events_counter_counts_every_outcome(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("count")
    good = view(session)
    await post_json(client, edge, [good, good, {"nonsense": True}])

    text = (await client.get(f"{edge.url}/metrics")).text

    assert 'proxima_edge_events_total{outcome="accepted"} 1.0' in text
    assert 'proxima_edge_events_total{outcome="duplicate"} 1.0' in text
    assert 'proxima_edge_events_total{outcome="rejected"} 1.0' in text


# -- refused ------------------------------------------------------------------------------------


async def test_a_client_that_leaves_mid_body_is_not_counted_as_a_server_error(
    edge: EdgeServer,
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", edge.settings.port)
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"event_id": '
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    registry = edge.app.state.edge.metrics.registry
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        refused = registry.get_sample_value(
            "proxima_edge_requests_total", {"route": "/v1/events", "status": "400"}
        )
        if refused:
            break
        assert time.monotonic() < deadline, "the abandoned request was never counted"
        await asyncio.sleep(POLL_INTERVAL_S)
    failed = registry.get_sample_value(
        "proxima_edge_requests_total", {"route": "/v1/events", "status": "500"}
    )
    assert failed is None
    assert spooled_events(edge) == []


async def test_a_single_invalid_event_is_a_400_naming_the_field(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    event = view(unique_session("invalid"), ts="yesterday")

    response = await post_json(client, edge, event)

    assert_error(response, 400, "bad_ts", field="ts")
    assert spooled_events(edge) == []


@pytest.mark.parametrize(
    "content_type", ["text/html", "application/xml", "multipart/form-data", "application/jsonx"]
)
async def test_an_unsupported_content_type_is_415(
    edge: EdgeServer, client: httpx.AsyncClient, content_type: str
) -> None:
    response = await client.post(
        f"{edge.url}/v1/events",
        content=json.dumps(view(unique_session("media"))),
        headers={"content-type": content_type},
    )

    assert_error(response, 415, "unsupported_media_type", field="content-type")


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        ("application/json", b'{"event_id": "abc', "malformed_json"),
        ("application/json", b"\xff\xfe\x00garbage", "malformed_json"),
        ("application/json", b"[NaN]", "malformed_json"),
        ("application/json", b"[" * 100_000, "malformed_json"),
        ("application/msgpack", b"\xc1", "malformed_msgpack"),
        ("application/msgpack", b"\x92\x01", "malformed_msgpack"),
        ("application/msgpack", msgpack.packb({1.5: "float key"}), "malformed_msgpack"),
        ("application/json", b"", "empty_body"),
        ("application/json", b"[]", "empty_batch"),
        ("application/json", b'"an event"', "not_an_object"),
        ("application/msgpack", msgpack.packb(17), "not_an_object"),
    ],
)
async def test_a_body_that_is_not_an_event_or_batch_is_400_with_a_code(
    edge: EdgeServer, client: httpx.AsyncClient, content_type: str, body: bytes, code: str
) -> None:
    response = await client.post(
        f"{edge.url}/v1/events", content=body, headers={"content-type": content_type}
    )

    assert_error(response, 400, code)


async def test_a_batch_of_more_than_the_maximum_events_is_refused_whole(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(session_burst=10_000)
    session = unique_session("big")
    batch = [view(session, event_id=f"evt-{n:08d}") for n in range(MAX_BATCH_EVENTS + 1)]

    response = await post_json(client, edge, batch)

    assert_error(response, 400, "batch_too_large")
    assert spooled_events(edge) == []


async def test_a_body_over_max_body_bytes_is_413_by_content_length(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(max_body_bytes=2048)
    batch = [view(unique_session("large")) for _ in range(30)]
    body = json.dumps(batch).encode()
    assert len(body) > 2048

    response = await client.post(f"{edge.url}/v1/events", content=body, headers=JSON)

    assert_error(response, 413, "body_too_large")
    assert spooled_events(edge) == []


async def test_a_chunked_body_over_max_body_bytes_is_413(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(max_body_bytes=2048)
    session = unique_session("chunked")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"["
        for n in range(30):
            yield (b"," if n else b"") + json.dumps(view(session)).encode()
        yield b"]"

    response = await client.post(f"{edge.url}/v1/events", content=chunks(), headers=JSON)

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "body_too_large")
    assert spooled_events(edge) == []


async def test_a_body_under_max_body_bytes_but_over_the_batch_limit_is_413(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(max_body_bytes=2 * MAX_BATCH_BYTES)
    padding = " " * (MAX_BATCH_BYTES + 1)
    body = f"[{json.dumps(view(unique_session('padded')))}{padding}]".encode()

    response = await client.post(f"{edge.url}/v1/events", content=body, headers=JSON)

    assert_error(response, 413, "body_too_large")


async def test_a_chunked_body_within_the_limit_is_accepted(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("chunked-ok")
    batch = [view(session, f"i00{n}") for n in range(1, 4)]

    async def chunks() -> AsyncIterator[bytes]:
        encoded = json.dumps(batch).encode()
        for start in range(0, len(encoded), 50):
            yield encoded[start : start + 50]

    response = await client.post(f"{edge.url}/v1/events", content=chunks(), headers=JSON)

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 3


async def test_a_batch_over_the_session_rate_keeps_what_fits_and_rejects_the_rest(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(session_rate=0.001, session_burst=2)
    session = unique_session("rate")
    batch = [view(session, f"i00{n}") for n in range(1, 5)]

    response = await post_json(client, edge, batch)

    body = response.json()
    assert response.status_code == 202
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [r["code"] for r in body["rejections"]] == ["rate_limited", "rate_limited"]
    single = await post_json(client, edge, view(session))
    assert_error(single, 429, "rate_limited")
    assert int(single.headers["retry-after"]) >= 1


async def test_get_on_the_events_route_is_405_with_a_json_body(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}/v1/events")

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
