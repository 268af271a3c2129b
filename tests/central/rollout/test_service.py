"""The rollout controller as a service on a real nats-server: ticks while connected."""

from __future__ import annotations

import pytest

from central.monitor.store import TelemetryStore
from central.rollout.service import RolloutService
from runtime.nats import NatsSettings
from tests.servers import NatsServerFactory
from tests.support import eventually

pytestmark = pytest.mark.integration

EVENTUALLY_S = 60.0  # a guard against hanging, never a measure of speed


async def test_it_ticks_on_an_empty_bus_and_again_after_the_server_restarts(
    nats_server_factory: NatsServerFactory,
) -> None:
    server = nats_server_factory()
    service = RolloutService(
        NatsSettings.from_url(server.url, name="test-rollout"), TelemetryStore(), tick_s=0.05
    )
    await service.start()
    try:
        await eventually(lambda: service.ticks >= 3, "a few ticks", timeout_s=EVENTUALLY_S)
        assert service.last_error is None  # no plans yet is not an error

        server.stop()
        await eventually(lambda: service.bus.connection is None, "the loss noticed")
        server.start()
        ticks = service.ticks
        await eventually(
            lambda: service.ticks >= ticks + 3 and service.last_error is None,
            "ticks on the new connection",
            timeout_s=EVENTUALLY_S,
        )
        assert service.bus.status.connections == 2
    finally:
        await service.close(5.0)
    assert service.bus.connection is None
