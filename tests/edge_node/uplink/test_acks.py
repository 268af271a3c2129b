"""Batch acknowledgements from a real JetStream: stored, duplicate, refused, no stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from edge_node.uplink.acks import AckTimeoutError, BatchAcks, NoStreamError, Outgoing
from protocol.subjects import MSG_ID_HEADER
from tests.servers import NatsServer


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


def batch(first: int, count: int, prefix: str = "evt") -> list[Outgoing]:
    return [
        Outgoing(n, f"{prefix}-{n:08d}", f"payload {n}".encode())
        for n in range(first, first + count)
    ]


async def test_a_batch_is_stored_once_and_a_resent_batch_is_flagged_duplicate(
    client: Client,
) -> None:
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="ACKS", subjects=["acks.>"], duplicate_window=60))
    acks = BatchAcks(client, MSG_ID_HEADER)
    await acks.open()
    lost = asyncio.Event()
    assert await acks.publish("acks.eu.n1", batch(1, 300), 5.0, lost) == [False] * 300
    again = batch(250, 100)  # 250-300 seen before, 301-349 new
    assert await acks.publish("acks.eu.n1", again, 5.0, lost) == [True] * 51 + [False] * 49
    info = await js.stream_info("ACKS")
    assert info.state.messages == 349
    first = await js.get_msg("ACKS", 1)
    assert first.data == b"payload 1" and first.headers == {MSG_ID_HEADER: "evt-00000001"}


async def test_a_subject_no_stream_takes_fails_the_batch_at_once(client: Client) -> None:
    acks = BatchAcks(client, MSG_ID_HEADER)
    await acks.open()
    started = asyncio.get_running_loop().time()
    with pytest.raises(NoStreamError):
        await acks.publish("nowhere.eu.n1", batch(1, 10), 30.0, asyncio.Event())
    assert asyncio.get_running_loop().time() - started < 30.0  # answered, not timed out


async def test_missing_acknowledgements_time_out_and_late_ones_are_ignored(client: Client) -> None:
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="SLOW", subjects=["slow.>"]))
    acks = BatchAcks(client, MSG_ID_HEADER)
    await acks.open()
    with pytest.raises(AckTimeoutError, match="acknowledgements missing"):
        await acks.publish("slow.eu.n1", batch(1, 2000), 0.0001, asyncio.Event())
    # The next batch is judged on its own acknowledgements only.
    assert await acks.publish("slow.eu.n1", batch(5000, 5), 5.0, asyncio.Event()) == [False] * 5


async def test_tokens_of_a_batch_must_be_unique(client: Client) -> None:
    acks = BatchAcks(client, MSG_ID_HEADER)
    await acks.open()
    with pytest.raises(ValueError, match="unique"):
        await acks.publish("x.y.z", batch(1, 2) + batch(1, 1), 1.0, asyncio.Event())
