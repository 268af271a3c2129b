"""``WS /v1/stream`` against a real edge: pushes, pings, bad frames, close codes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.edge_node.conftest import EdgeFactory, EdgeServer, start_edge_without_bundle

FRAME_WAIT_S = 10.0  # a guard against hanging, never an expectation
POLL_INTERVAL_S = 0.01
POLL_DEADLINE_S = 10.0
MAX_CLIENT_FRAME = 4096


def unique_session(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def view(session_id: str, item_id: str = "i001") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": item_id,
        "ts": int(time.time() * 1000),
    }


def stream_url(edge: EdgeServer, **params: str) -> str:
    return f"{edge.ws_url}/v1/stream?{urlencode(params)}"


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), FRAME_WAIT_S)
    assert isinstance(raw, str)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def assert_closed_with(url: str, code: int) -> str:
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), FRAME_WAIT_S)
    received = closed.value.rcvd
    assert received is not None
    assert received.code == code
    return received.reason


async def assert_still_usable(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "ping"}))
    assert await next_frame(ws) == {"type": "pong"}


async def wait_for_open_streams(edge: EdgeServer, expected: int) -> None:
    deadline = time.monotonic() + POLL_DEADLINE_S
    while edge.app.state.edge.streams.open_streams != expected:
        assert time.monotonic() < deadline, "the edge never released the streams"
        await asyncio.sleep(POLL_INTERVAL_S)


async def post_event(client: httpx.AsyncClient, edge: EdgeServer, event: dict[str, Any]) -> None:
    response = await client.post(f"{edge.url}/v1/events", json=event)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1


# -- pushes -------------------------------------------------------------------------------------


async def test_connecting_gets_recommendations_at_once(edge: EdgeServer) -> None:
    session = unique_session("connect")

    async with connect(stream_url(edge, session_id=session, k="5")) as ws:
        frame = await next_frame(ws)

    assert frame["type"] == "recommendations"
    assert frame["session_id"] == session
    assert frame["cold"] is True
    assert frame["model_version"] == edge.app.state.edge.models.current.version
    assert 0 < len(frame["items"]) <= 5
    assert frame["request_id"]


async def test_an_event_of_the_session_pushes_fresh_recommendations(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("push")
    async with connect(stream_url(edge, session_id=session)) as ws:
        first = await next_frame(ws)

        await post_event(client, edge, view(session, first["items"][4]["item_id"]))
        pushed = await next_frame(ws)

    assert pushed["type"] == "recommendations"
    assert pushed["cold"] is False
    assert pushed["request_id"] != first["request_id"]
    assert pushed["items"] != first["items"]


async def test_every_stream_of_the_session_gets_the_push(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("fan-out")
    url = stream_url(edge, session_id=session)
    async with connect(url) as first, connect(url) as second:
        await next_frame(first)
        await next_frame(second)

        await post_event(client, edge, view(session))

        assert (await next_frame(first))["cold"] is False
        assert (await next_frame(second))["cold"] is False


async def test_an_event_of_another_session_pushes_nothing(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    async with connect(stream_url(edge, session_id=unique_session("quiet"))) as ws:
        await next_frame(ws)

        await post_event(client, edge, view(unique_session("elsewhere")))

        # A push would be on its way before the answer to a ping sent after the event.
        await assert_still_usable(ws)


# -- client frames ------------------------------------------------------------------------------


async def test_ping_is_answered_with_pong(edge: EdgeServer) -> None:
    async with connect(stream_url(edge, session_id=unique_session("ping"))) as ws:
        await next_frame(ws)
        for _ in range(3):
            await assert_still_usable(ws)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "malformed_json"),
        ("{", "malformed_json"),
        ("[" * MAX_CLIENT_FRAME, "malformed_json"),  # too deep to parse
        ('{"type": "pong"}', "unknown_frame"),
        ('{"type": "subscribe", "session_id": "x"}', "unknown_frame"),
        ('["ping"]', "unknown_frame"),
        ('"ping"', "unknown_frame"),
        ("null", "unknown_frame"),
        (" " * (MAX_CLIENT_FRAME + 1), "frame_too_large"),
        ("x" * 100_000, "frame_too_large"),
        (b"\x00\x01binary", "binary_frame"),
        (b'{"type": "ping"}', "binary_frame"),
    ],
)
async def test_a_bad_frame_gets_an_error_frame_and_the_stream_stays_open(
    edge: EdgeServer, frame: str | bytes, code: str
) -> None:
    async with connect(stream_url(edge, session_id=unique_session("bad-frame"))) as ws:
        await next_frame(ws)

        await ws.send(frame)
        error = await next_frame(ws)

        assert error["type"] == "error"
        assert error["error"]["code"] == code
        assert error["error"]["message"]
        await assert_still_usable(ws)


async def test_the_stream_keeps_pushing_after_bad_frames(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("after-bad")
    async with connect(stream_url(edge, session_id=session)) as ws:
        await next_frame(ws)
        for frame in ("garbage", b"\xff", "x" * 5000):
            await ws.send(frame)
            assert (await next_frame(ws))["type"] == "error"

        await post_event(client, edge, view(session))

        assert (await next_frame(ws))["type"] == "recommendations"


# -- close codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"session_id": ""},
        {"session_id": "s" * 129},
        {"session_id": "bad\x01id"},
        {"session_id": "s", "k": "0"},
        {"session_id": "s", "k": "²"},
        {"session_id": "s", "slot": "not a slot"},
        {"session_id": "s", "ctx.": "empty key"},
    ],
)
async def test_bad_parameters_close_the_stream_with_1008(
    edge: EdgeServer, params: dict[str, str]
) -> None:
    reason = await assert_closed_with(stream_url(edge, **params), 1008)

    assert reason
    await wait_for_open_streams(edge, 0)


async def test_a_close_reason_naming_a_long_non_ascii_key_fits_in_the_close_frame(
    edge: EdgeServer,
) -> None:
    key = "ctx." + "\N{GRINNING FACE}" * 60

    reason = await assert_closed_with(stream_url(edge, session_id="s", **{key: "v" * 300}), 1008)

    assert reason.startswith("ctx.")
    assert len(reason.encode()) <= 123


async def test_streams_beyond_the_per_session_limit_are_closed_with_1013(
    edge_factory: EdgeFactory,
) -> None:
    edge = edge_factory(stream_max_per_session=2)
    session = unique_session("crowded")
    url = stream_url(edge, session_id=session)
    async with connect(url) as first, connect(url) as second:
        await next_frame(first)
        await next_frame(second)

        reason = await assert_closed_with(url, 1013)

        assert "too many streams" in reason
        # Another session is not affected.
        async with connect(stream_url(edge, session_id=unique_session("other"))) as other:
            assert (await next_frame(other))["type"] == "recommendations"
        await assert_still_usable(first)

    # Closed streams free their places.
    await wait_for_open_streams(edge, 0)
    async with connect(url) as again:
        assert (await next_frame(again))["type"] == "recommendations"


async def test_without_a_bundle_the_stream_sends_an_error_frame(
    edge_factory: EdgeFactory, tmp_path: Path
) -> None:
    edge = start_edge_without_bundle(edge_factory, tmp_path)

    async with connect(stream_url(edge, session_id=unique_session("no-bundle"))) as ws:
        frame = await next_frame(ws)
        await assert_still_usable(ws)

    assert frame["type"] == "error"
    assert frame["error"]["code"] == "not_ready"
