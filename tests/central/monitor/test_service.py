"""LatencyMonitor on a real nats-server: reports in, answers and metrics out, bad input counted."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from prometheus_client.parser import text_string_to_metric_families

from central.monitor.errors import MonitorSettingsError
from central.monitor.http import MetricsServer
from central.monitor.query import LatencyQuery
from central.monitor.service import LatencyMonitor
from devtools.localservers import NatsServerFactory
from protocol.subjects import MONITOR_REQUEST_SUBJECT, telemetry_subject
from protocol.telemetry import Refused, TelemetryReport
from tests.central.monitor.conftest import EVENTUALLY_S, publish, start_monitor
from tests.central.monitor.reports import repeated, report, variant
from tests.support import eventually

pytestmark = pytest.mark.integration


def count(monitor: LatencyMonitor, outcome: str, name: str = "proxima_monitor_reports") -> float:
    value = monitor.registry.get_sample_value(f"{name}_total", {"outcome": outcome})
    assert value is not None
    return value


def fleet(now: float) -> list[TelemetryReport]:
    """Two intervals of two eu nodes (one with a canary) and one interval of a us node."""
    reports = []
    for seq, sent_at in ((1, now - 10), (2, now - 5)):
        reports.append(report(
            region="eu", node="n1", seq=seq, sent_at=sent_at, requests=100, errors=1,
            stages={"request": repeated(0.002, 90), "total": repeated(0.0008, 90)},
            variants={"stable": variant(7, 90, impressions=90, clicks=9, latency_s=[0.0008] * 90)},
            events={"accepted": 40},
        ))  # fmt: skip
        reports.append(report(
            region="eu", node="n2", seq=seq, sent_at=sent_at, requests=50, canary=8,
            canary_percent=10, stages={"request": repeated(0.004, 50)},
            variants={"canary": variant(8, 50, impressions=40, clicks=8, latency_s=[0.001] * 50)},
            refused=(Refused(9, "bad_signature", "signature does not verify"),),
        ))  # fmt: skip
    reports.append(report(region="us", node="u1", sent_at=now - 2, requests=30, stable=6,
                          stages={"request": repeated(0.0005, 30)}))  # fmt: skip
    return reports


async def ask(bus: NatsClient, body: bytes) -> dict[str, Any]:
    reply = await bus.request(MONITOR_REQUEST_SUBJECT, body, timeout=10)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_reports_of_two_regions_are_merged_and_answered_over_the_bus(
    monitor: LatencyMonitor, bus: NatsClient
) -> None:
    await publish(bus, *fleet(time.time()))
    await eventually(
        lambda: count(monitor, "accepted") == 5,
        "all five reports were taken in",
        timeout_s=EVENTUALLY_S,
    )

    answer = await ask(bus, LatencyQuery(window_s=60, nodes=True).encode())

    assert answer["source"] == "monitor"
    eu, us = answer["regions"]
    assert (eu["region"], us["region"]) == ("eu", "us")
    assert (eu["reports"], eu["requests"], eu["errors"]) == (4, 300, 2)
    assert eu["span_s"] == pytest.approx(10.0, abs=0.01)
    assert eu["request_rate"] == pytest.approx(30.0, rel=0.01)
    request = eu["latency_ms"]["request"]
    assert request["count"] == 280
    assert 2.0 / 1.25 <= request["p50"] <= 2.0 * 1.25  # 180 of 280 took 2 ms
    assert 4.0 / 1.25 <= request["p99"] <= 4.0 * 1.25  # the slowest 100 took 4 ms
    assert eu["bundles"] == {"stable": [7], "canary": [8], "canary_percent": [10], "shadow": False}
    assert eu["variants"]["stable"]["ctr"] == pytest.approx(0.1)
    assert eu["variants"]["canary"]["ctr"] == pytest.approx(0.2)
    assert eu["refused"] == [{"node": "n2", "version": 9, "code": "bad_signature",
                              "message": "signature does not verify"}]  # fmt: skip
    assert eu["events"] == {"accepted": 80}
    assert [n["node"] for n in eu["nodes"]] == ["n1", "n2"]
    assert [n["requests"] for n in eu["nodes"]] == [200, 100]
    assert eu["silent"] == eu["stale"] == []
    assert us["requests"] == 30 and us["bundles"]["stable"] == [6]

    only_us = await ask(bus, LatencyQuery(region="us", window_s=60).encode())
    assert [r["region"] for r in only_us["regions"]] == ["us"]
    assert "nodes" not in only_us["regions"][0]


async def test_bad_reports_are_counted_and_logged_with_the_reason(
    monitor: LatencyMonitor, bus: NatsClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxima.central.monitor")
    good = report(node="n1", sent_at=time.time())
    await bus.publish(telemetry_subject("eu", "n1"), b"\xc1 not msgpack")
    await bus.publish(telemetry_subject("eu", "n1"), good.encode()[:-3])
    await bus.publish(telemetry_subject("eu", "n9"), good.encode())  # another node's subject
    await publish(bus, good, good)
    await eventually(
        lambda: count(monitor, "malformed") == 3 and count(monitor, "duplicate") == 1,
        "the bad reports were counted",
        timeout_s=EVENTUALLY_S,
    )
    assert count(monitor, "accepted") == 1
    assert [s.node for s in monitor.store.nodes()] == ["n1"]
    assert "not valid msgpack" in caplog.text
    assert "report from eu/n1 arrived on 'telemetry.eu.n9'" in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the rest within ten seconds are only debug lines
    assert monitor.listening


async def test_bad_queries_get_an_error_naming_what_is_wrong(
    monitor: LatencyMonitor, bus: NatsClient
) -> None:
    cases = [
        (b"window please", None),
        (b'{"window_s": -5}', "window_s"),
        (b'{"region": "eu.west"}', "region"),
        (b'{"nodes": "yes"}', "nodes"),
        (b'{"stage": "request"}', "stage"),
        (b"[]", None),
    ]
    for body, field in cases:
        answer = await ask(bus, body)
        assert answer["error"]["code"] == "bad_monitor_query", body
        assert answer["error"].get("field") == field, body
    assert count(monitor, "refused", "proxima_monitor_requests") == len(cases)
    assert monitor.listening


async def test_a_monitor_that_falls_behind_drops_reports_and_counts_them(nats_url: str) -> None:
    monitor = await start_monitor(nats_url, pending_msgs_limit=5)
    sent = 300
    base = time.time()
    payloads = [report(node="n1", seq=n + 1, sent_at=base).encode() for n in range(sent)]

    def publish_from_elsewhere() -> None:
        async def burst() -> None:
            client = await nats.connect(nats_url)
            for payload in payloads:
                await client.publish(telemetry_subject("eu", "n1"), payload)
            await client.flush()
            await client.close()

        asyncio.run(burst())

    try:
        publisher = threading.Thread(target=publish_from_elsewhere)
        publisher.start()
        publisher.join(timeout=60)  # blocks this loop: the monitor cannot keep up meanwhile
        assert not publisher.is_alive()
        await eventually(
            lambda: count(monitor, "accepted") + count(monitor, "dropped") == sent,
            "every report was either taken in or counted as dropped",
            timeout_s=EVENTUALLY_S,
        )
        assert count(monitor, "dropped") > 0
        assert monitor.store.window("eu", base - 1, base + 1).reports == count(monitor, "accepted")
        assert monitor.listening
    finally:
        await monitor.close()


async def test_the_monitor_listens_again_after_nats_restarts(
    nats_server_factory: NatsServerFactory,
) -> None:
    server = nats_server_factory()
    monitor = await start_monitor(server.url)
    try:
        server.stop()
        await eventually(
            lambda: not monitor.listening, "the monitor noticed", timeout_s=EVENTUALLY_S
        )
        server.start()
        await monitor.wait_listening(60)
        client = await nats.connect(server.url)
        try:
            await publish(client, report(node="back", sent_at=time.time()))
        finally:
            await client.close()
        await eventually(
            lambda: count(monitor, "accepted") == 1,
            "a report after the restart",
            timeout_s=EVENTUALLY_S,
        )
        assert [s.node for s in monitor.store.nodes()] == ["back"]
    finally:
        await monitor.close()


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_endpoint_shows_region_node_and_variant_figures(
    nats_url: str, bus: NatsClient
) -> None:
    monitor = await start_monitor(nats_url, silent_after_s=3.0)
    server = MetricsServer([monitor.registry], port=0)
    await server.start()
    try:
        now = time.time()
        await publish(bus, *fleet(now))
        await eventually(
            lambda: count(monitor, "accepted") == 5,
            "the fleet was taken in",
            timeout_s=EVENTUALLY_S,
        )
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{server.port}/metrics")
        assert response.status_code == 200
        samples = scrape(response.text)
        p99 = monitor.store.window("eu", now - 60).quantile("request", 0.99)
        eu_request_p99 = (("quantile", "0.99"), ("region", "eu"), ("stage", "request"))
        assert samples["proxima_region_latency_seconds", eu_request_p99] == pytest.approx(p99)
        assert samples["proxima_region_error_ratio", (("region", "eu"),)] == pytest.approx(2 / 300)
        version = "proxima_node_bundle_version"
        assert samples[version, (("node", "n2"), ("region", "eu"), ("variant", "canary"))] == 8
        assert samples[version, (("node", "u1"), ("region", "us"), ("variant", "stable"))] == 6
        assert samples["proxima_node_silent", (("node", "n1"), ("region", "eu"))] == 0
        assert samples["proxima_variant_ctr", (("region", "eu"), ("variant", "canary"))] == 0.2
        stable = (("region", "eu"), ("variant", "stable"))
        assert samples["proxima_variant_impressions_total", stable] == 180
        assert samples["proxima_variant_clicks_total", stable] == 18
        assert samples["proxima_monitor_reports_total", (("outcome", "accepted"),)] == 5
        assert samples["proxima_monitor_connected", ()] == 1

        await asyncio.sleep(3.2)  # nothing more arrives: the nodes fall silent
        async with httpx.AsyncClient() as http:
            samples = scrape((await http.get(f"http://127.0.0.1:{server.port}/metrics")).text)
        assert samples["proxima_node_silent", (("node", "n1"), ("region", "eu"))] == 1

        with pytest.raises(MonitorSettingsError, match="cannot serve metrics"):
            await MetricsServer([monitor.registry], port=server.port).start()
    finally:
        await server.close()
        await monitor.close()
