"""Slow and greedy clients against an edge served exactly as ``proxima-edge serve`` serves it
(``edge_node.server.uvicorn_config``: httptools with the connection guard): slowloris bodies
and headers, per-address connection caps, WebSocket stream caps."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from edge_node.config import EdgeSettings
from edge_node.server import uvicorn_config
from tests.edge_node.conftest import Keys
from tests.servers import pick_free_port
from tests.support import eventually

HOST = "127.0.0.1"
READ_WAIT_S = 15.0  # a guard against hanging, never an expectation


class ServedEdge:
    """An edge under uvicorn with the production protocol, in a background thread."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        config = uvicorn_config(settings)
        self.app: Any = config.app
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.settings.port}"

    def start(self) -> ServedEdge:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "edge did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


ServedFactory = Callable[..., ServedEdge]


@pytest.fixture
def served_edge(tmp_path: Path, edge_keys: Keys, edge_bundle: Path) -> Iterator[ServedFactory]:
    started: list[ServedEdge] = []

    def start(**overrides: Any) -> ServedEdge:
        values: dict[str, Any] = {
            "region": "eu",
            "node": f"slow{len(started)}",
            "public_key": edge_keys.public,
            "bundle": edge_bundle,
            "port": pick_free_port(),
            "spool_dir": tmp_path / f"spool-{len(started)}",
            "log_level": "warning",
            **overrides,
        }
        edge = ServedEdge(EdgeSettings.load(overrides=values)).start()
        started.append(edge)
        return edge

    yield start
    for edge in started:
        edge.stop()


def view_body() -> bytes:
    event = {
        "event_id": uuid.uuid4().hex,
        "session_id": "slow",
        "type": "view",
        "item_id": "i001",
        "ts": int(time.time() * 1000),
    }
    return json.dumps(event).encode()


async def open_socket(
    edge: ServedEdge,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, edge.settings.port)


def post_head(content_length: int) -> bytes:
    return (
        "POST /v1/events HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n"
        f"content-length: {content_length}\r\n\r\n"
    ).encode()


async def answer_then_eof(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    """Reads one HTTP answer and asserts the server then closed the socket."""
    raw = await asyncio.wait_for(reader.read(), READ_WAIT_S)  # read() returns at EOF only
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, json.loads(body)


def rejections(text: str, reason: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'proxima_edge_rejections_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- slow bodies -----------------------------------------------------------------------------


async def test_slow_bodies_get_408_and_are_closed_while_healthz_stays_up(
    served_edge: ServedFactory,
) -> None:
    slots = 8
    edge = served_edge(max_concurrency=slots, body_rate_grace_s=3.0, body_timeout_s=60.0)
    sockets = [await open_socket(edge) for _ in range(slots)]
    for _, writer in sockets:
        writer.write(post_head(4096) + b"[")  # one byte, then nothing
        await writer.drain()
    async with httpx.AsyncClient(timeout=10) as client:

        async def all_slots_held() -> bool:
            response = await client.get(f"{edge.url}/v1/model")
            return response.status_code == 503

        await eventually(all_slots_held, "the slow bodies to hold every request slot")
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(f"{edge.url}{path}")).status_code == 200, path

        for reader, writer in sockets:
            status, headers, body = await answer_then_eof(reader)
            assert status == 408
            assert body["error"]["code"] == "body_too_slow"
            assert headers["connection"] == "close"
            writer.close()

        assert (await client.get(f"{edge.url}/v1/model")).status_code == 200
        assert (await client.get(f"{edge.url}/healthz")).status_code == 200


async def test_a_body_above_the_minimum_rate_still_has_a_total_deadline(
    served_edge: ServedFactory,
) -> None:
    edge = served_edge(body_rate_grace_s=0.5, body_min_rate=100, body_timeout_s=1.5)
    reader, writer = await open_socket(edge)
    writer.write(post_head(100_000))

    async def trickle() -> None:  # ~2000 bytes/s: far above the minimum rate, never done
        while not writer.is_closing():
            writer.write(b" " * 200)
            await writer.drain()
            await asyncio.sleep(0.1)

    trickling = asyncio.create_task(trickle())
    try:
        status, _, body = await answer_then_eof(reader)
    finally:
        trickling.cancel()
        writer.close()
    assert status == 408
    assert body["error"]["code"] == "body_timeout"


async def test_a_body_sent_at_once_is_accepted(served_edge: ServedFactory) -> None:
    edge = served_edge(body_rate_grace_s=0.5, body_min_rate=1)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{edge.url}/v1/events",
            content=view_body(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 202, response.text


# -- slow and oversized headers ----------------------------------------------------------------


async def test_headers_that_never_finish_get_408_and_are_closed(
    served_edge: ServedFactory,
) -> None:
    edge = served_edge(header_timeout_s=0.5)
    reader, writer = await open_socket(edge)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: edge\r\n")  # no blank line: never done
    await writer.drain()
    status, _, body = await answer_then_eof(reader)
    writer.close()
    assert status == 408
    assert body["error"]["code"] == "header_timeout"
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{edge.url}/metrics")).text
    assert rejections(text, "header_timeout") >= 1


async def test_a_connection_that_sends_nothing_is_closed(served_edge: ServedFactory) -> None:
    edge = served_edge(header_timeout_s=0.5)
    reader, writer = await open_socket(edge)
    status, _, body = await answer_then_eof(reader)
    writer.close()
    assert (status, body["error"]["code"]) == (408, "header_timeout")


async def test_oversized_headers_get_431(served_edge: ServedFactory) -> None:
    edge = served_edge()
    reader, writer = await open_socket(edge)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: edge\r\n")
    for _ in range(100):
        writer.write(b"x-filler: " + b"a" * 1000 + b"\r\n")
    await writer.drain()
    status, _, body = await answer_then_eof(reader)
    writer.close()
    assert (status, body["error"]["code"]) == (431, "headers_too_large")


# -- connections per address -----------------------------------------------------------------


async def test_connections_beyond_the_per_address_cap_get_429(
    served_edge: ServedFactory,
) -> None:
    cap = 4
    edge = served_edge(connections_per_address=cap, header_timeout_s=60.0)
    idle = [await open_socket(edge) for _ in range(cap)]

    async def refused() -> bool:
        reader, writer = await open_socket(edge)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: edge\r\n\r\n")
        await writer.drain()
        status, headers, body = await answer_then_eof(reader)
        writer.close()
        assert headers.get("retry-after") == "1"
        return status == 429 and body["error"]["code"] == "too_many_connections"

    await eventually(refused, "a connection beyond the cap to be refused")

    for _, writer in idle:
        writer.close()
    async with httpx.AsyncClient(timeout=10) as client:

        async def served_again() -> bool:
            try:
                return (await client.get(f"{edge.url}/healthz")).status_code == 200
            except httpx.RemoteProtocolError:
                return False

        await eventually(served_again, "closed connections to free their places")
        text = (await client.get(f"{edge.url}/metrics")).text
    assert rejections(text, "connections") >= 1


# -- WebSocket streams -------------------------------------------------------------------------


def stream_url(edge: ServedEdge, session_id: str) -> str:
    return f"ws://{HOST}:{edge.settings.port}/v1/stream?{urlencode({'session_id': session_id})}"


async def refused_stream_reason(url: str) -> str:
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), READ_WAIT_S)
    received = closed.value.rcvd
    assert received is not None and received.code == 1013
    return received.reason


@pytest.mark.parametrize(
    ("overrides", "scope"),
    [
        pytest.param({"stream_max_per_address": 2}, "address", id="per-address"),
        pytest.param({"stream_max": 2}, "edge", id="whole-edge"),
    ],
)
async def test_streams_beyond_a_cap_are_closed_with_1013(
    served_edge: ServedFactory, overrides: dict[str, Any], scope: str
) -> None:
    edge = served_edge(**overrides)
    async with (
        connect(stream_url(edge, "w1")) as first,
        connect(stream_url(edge, "w2")) as second,
    ):
        for ws in (first, second):
            frame = json.loads(await asyncio.wait_for(ws.recv(), READ_WAIT_S))
            assert frame["type"] == "recommendations"
        reason = await refused_stream_reason(stream_url(edge, "w3"))
        assert reason == f"too many streams for this {scope}"
        # Upgraded connections left the per-address connection count to the stream caps.
        assert edge.app.state.edge.streams.open_streams == 2
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{edge.url}/metrics")).text
    assert rejections(text, "streams") >= 1
    await eventually(
        lambda: edge.app.state.edge.streams.open_streams == 0, "closed streams to leave"
    )
    async with connect(stream_url(edge, "w4")) as again:
        frame = json.loads(await asyncio.wait_for(again.recv(), READ_WAIT_S))
        assert frame["type"] == "recommendations"
