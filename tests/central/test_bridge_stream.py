"""Central makes the EVENTS stream with the bridge's limits; how an existing one differs."""

from __future__ import annotations

import logging

import nats
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from central.bridge_jetstream import StreamLimits, ensure_stream
from central.settings import BridgeSettings
from devtools.localservers import NatsServerFactory
from protocol.subjects import DUPLICATE_WINDOW_S, EVENTS_STREAM, EVENTS_SUBJECTS

LIMITS = StreamLimits(max_bytes=256 << 20, max_age_s=86_400.0, replicas=1, discard="new")


async def test_a_missing_stream_is_made_with_the_limits_from_the_settings(
    nats_server_factory: NatsServerFactory,
) -> None:
    nats_server = nats_server_factory()  # without the stream the nats_server fixture has
    settings = BridgeSettings(
        stream_max_bytes=256 << 20, stream_max_age_s=86_400.0, stream_discard="new"
    )
    assert settings.stream_limits() == LIMITS
    client = await nats.connect(nats_server.url)
    try:
        info = await ensure_stream(
            client.jetstream(), EVENTS_STREAM, [EVENTS_SUBJECTS], settings.stream_limits()
        )
        config = (await client.jetstream().stream_info(EVENTS_STREAM)).config
    finally:
        await client.close()
    assert info.config.max_bytes == config.max_bytes == 256 << 20
    assert config.max_age == 86_400.0
    assert config.discard == DiscardPolicy.NEW
    assert (config.num_replicas, config.storage) == (1, StorageType.FILE)


async def test_an_existing_stream_is_left_as_the_operator_made_it_its_differences_logged(
    nats_server_factory: NatsServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    nats_server = nats_server_factory()
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    try:
        await js.add_stream(
            StreamConfig(
                name=EVENTS_STREAM, subjects=[EVENTS_SUBJECTS], storage=StorageType.FILE,
                max_bytes=64 << 20, max_age=3600.0, duplicate_window=30.0,
            )
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, "proxima.central.bridge"):
            await ensure_stream(js, EVENTS_STREAM, [EVENTS_SUBJECTS], LIMITS)
        kept = (await js.stream_info(EVENTS_STREAM)).config
        assert "max_bytes is 67108864, settings say 268435456" in caplog.text
        assert "discard is old, settings say new" in caplog.text
        assert (kept.max_bytes, kept.max_age) == (64 << 20, 3600.0)  # the operator's
        assert kept.discard == DiscardPolicy.OLD
        assert kept.duplicate_window == DUPLICATE_WINDOW_S  # lengthened: dedupe needs it

        caplog.clear()
        smaller = StreamLimits(max_bytes=1 << 20, max_age_s=60.0)
        with caplog.at_level(logging.WARNING, "proxima.central.bridge"):
            await ensure_stream(js, EVENTS_STREAM, [EVENTS_SUBJECTS], smaller)
        kept = (await js.stream_info(EVENTS_STREAM)).config
        assert "max_bytes is 67108864, settings say 1048576" in caplog.text
        assert (kept.max_bytes, kept.max_age) == (64 << 20, 3600.0)  # never shrunk
    finally:
        await client.close()
