"""A latency monitor on a real nats-server, and reports published the way edges publish them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from central.monitor.service import LatencyMonitor, MonitorSettings
from protocol.subjects import telemetry_subject
from protocol.telemetry import TelemetryReport
from runtime.nats import NatsSettings

EVENTUALLY_S = 60.0  # a guard against hanging, never a measure of speed


def monitor_settings(url: str, **overrides: object) -> MonitorSettings:
    values: dict[str, object] = {
        "nats": NatsSettings.from_url(url, name="test-monitor"),
        "connect_retry_initial_s": 0.05,
        "connect_retry_max_s": 0.5,
        "min_report_spacing_s": 0.0,  # fleets are published at once, as a history
    }
    values.update(overrides)
    return MonitorSettings(**values)  # type: ignore[arg-type]


async def start_monitor(url: str, **overrides: object) -> LatencyMonitor:
    monitor = LatencyMonitor(monitor_settings(url, **overrides))
    await monitor.start()
    await monitor.wait_listening(EVENTUALLY_S)
    return monitor


@pytest.fixture
async def monitor(nats_url: str) -> AsyncIterator[LatencyMonitor]:
    running = await start_monitor(nats_url)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def publish(client: NatsClient, *reports: TelemetryReport) -> None:
    for report in reports:
        await client.publish(telemetry_subject(report.region, report.node), report.encode())
    await client.flush()
