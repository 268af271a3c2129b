"""A bundle object bigger than the caller takes is refused from its recorded size."""

from __future__ import annotations

import base64
import json

import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from devtools.localservers import NatsServer
from protocol.subjects import bundle_object_name
from runtime.registry import BundleTooLargeError, ModelRegistry

BIG = bytes(range(256)) * 12_288  # 3 MiB


async def test_an_oversize_object_is_refused_before_a_chunk_is_read(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url)
    try:
        registry = ModelRegistry(client.jetstream())
        await registry.publish_bundle(BIG, 3)
        before = client.stats["in_bytes"]
        with pytest.raises(BundleTooLargeError) as caught:
            await registry.fetch(3, timeout_s=10, max_bytes=1 << 20)
        assert caught.value.code == "bundle_too_large"
        assert f"is {len(BIG)} bytes, over the limit of {1 << 20}" in caught.value.message
        assert client.stats["in_bytes"] - before < 64 * 1024  # the metadata, not the bundle
        fetched = await registry.fetch(3, timeout_s=10, max_bytes=len(BIG))
        assert fetched.data == BIG
    finally:
        await client.close()


async def test_a_download_past_the_limit_stops_even_when_the_size_lies(
    js: JetStreamContext,
) -> None:
    registry = ModelRegistry(js)
    await registry.publish_bundle(BIG, 4)
    name = bundle_object_name(4)
    encoded = base64.urlsafe_b64encode(name.encode()).decode()
    subject = f"$O.proxima-models.M.{encoded}"
    last: Msg = await js.get_last_msg("OBJ_proxima-models", subject)  # type: ignore[assignment]
    info = json.loads(last.data)
    info["size"] = 1000  # a publisher that lies about the size
    await js.publish(subject, json.dumps(info).encode(), headers={"Nats-Rollup": "sub"})
    with pytest.raises(BundleTooLargeError, match="sent more than"):
        await registry.fetch(4, timeout_s=10, max_bytes=1 << 20)
