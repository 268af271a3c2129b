"""The EVENTS stream as central makes it, for tests whose edges publish (edges never make it)."""

from __future__ import annotations

import asyncio
import concurrent.futures

import nats
from nats.js.api import StreamInfo

from central.bridge_jetstream import StreamLimits, ensure_stream
from protocol.subjects import EVENTS_STREAM, EVENTS_SUBJECTS

TEST_LIMITS = StreamLimits(max_bytes=1 << 30, max_age_s=3600.0)


async def make_events_stream(url: str, limits: StreamLimits = TEST_LIMITS) -> StreamInfo:
    client = await nats.connect(url)
    try:
        return await ensure_stream(client.jetstream(), EVENTS_STREAM, [EVENTS_SUBJECTS], limits)
    finally:
        await client.close()


def make_events_stream_now(url: str) -> None:
    """From synchronous code, such as a session fixture, whatever loop is running."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, make_events_stream(url)).result(timeout=30)
