"""``proxima latency``: asks the running monitor, or listens to telemetry itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from click.testing import CliRunner, Result
from nats.aio.client import Client as NatsClient

from central.cli import main
from central.monitor.service import LatencyMonitor
from devtools.localservers import NatsServerFactory
from tests.central.monitor.conftest import EVENTUALLY_S, publish
from tests.central.monitor.reports import repeated, report, variant
from tests.central.monitor.test_service import count, fleet
from tests.support import eventually

pytestmark = pytest.mark.integration


async def proxima(*args: str) -> Result:
    """Runs the command in a thread: it runs its own event loop, as from a shell."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


def parsed(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


async def test_json_comes_from_the_running_monitor(
    monitor: LatencyMonitor, bus: NatsClient, nats_url: str
) -> None:
    await publish(bus, *fleet(time.time()))
    await eventually(
        lambda: count(monitor, "accepted") == 5, "the fleet was taken in", timeout_s=EVENTUALLY_S
    )

    body = parsed(await proxima("latency", "--json", "--nats", nats_url, "--window", "1m"))

    assert (body["source"], body["window_s"], body["listened_s"]) == ("monitor", 60.0, None)
    eu = {r["region"]: r for r in body["regions"]}["eu"]
    assert eu["latency_ms"]["request"]["count"] == 280
    assert eu["requests"] == 300
    assert "nodes" not in eu

    body = parsed(await proxima("latency", "--json", "--nats", nats_url, "--region", "us",
                                "--nodes"))  # fmt: skip
    (us,) = body["regions"]
    assert [n["node"] for n in us["nodes"]] == ["u1"]
    assert us["nodes"][0]["latency_ms"]["request"]["count"] == 30


async def test_tables_per_region_and_per_node(
    monitor: LatencyMonitor, bus: NatsClient, nats_url: str
) -> None:
    await publish(bus, *fleet(time.time()))
    await eventually(
        lambda: count(monitor, "accepted") == 5, "the fleet was taken in", timeout_s=EVENTUALLY_S
    )

    result = await proxima("latency", "--nats", nats_url, "--nodes")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "figures from the latency monitor over the last 1m" in out
    assert "2/2 nodes reporting · 30.0 req/s · errors 0.67% · stable v7 · canary v8 at 10%" in out
    assert "n2 refused v9 (bad_signature)" in out
    for stage in ("request", "total"):
        assert f"│ {stage} " in out
    assert "eu: nodes" in out and "us: nodes" in out
    assert "│ u1 " in out

    watched = await proxima("latency", "--nats", nats_url, "--watch", "--count", "2",
                            "--refresh", "0.1s")  # fmt: skip
    assert watched.exit_code == 0, watched.output
    assert watched.stdout.count("req/s") >= 2


@contextlib.asynccontextmanager
async def edges_reporting(url: str, every_s: float) -> AsyncIterator[None]:
    """Two nodes publish a report every ``every_s`` until the block ends."""

    async def keep_publishing(client: NatsClient) -> None:
        seq = 0
        while True:
            seq += 1
            now = time.time()
            await publish(client, *(
                report(region="eu", node=node, seq=seq, sent_at=now, interval_s=every_s,
                       requests=10, stages={"request": repeated(0.003, 10)},
                       variants={"stable": variant(7, 10, latency_s=[0.001] * 10)})
                for node in ("n1", "n2")
            ))  # fmt: skip
            await asyncio.sleep(every_s)

    client = await nats.connect(url)
    task = asyncio.create_task(keep_publishing(client))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_without_a_monitor_it_listens_to_telemetry_and_says_so(
    nats_server_factory: NatsServerFactory,
) -> None:
    server = nats_server_factory()  # a bus nobody monitors
    async with edges_reporting(server.url, every_s=0.2):
        result = await proxima("latency", "--json", "--nats", server.url, "--listen", "1.5s")
        table = await proxima("latency", "--nats", server.url, "--listen", "1s", "--region", "eu")

    body = parsed(result)
    assert body["source"] == "telemetry"
    assert 1.5 <= body["listened_s"] < 10
    assert "no monitor answered on proxima.monitor.latency" in result.stderr
    (eu,) = body["regions"]
    assert eu["nodes_total"] == 2
    reports = eu["reports"]
    assert reports >= 2 * 5  # at least five rounds of two nodes in 1.5 s
    assert eu["requests"] == 10 * reports
    assert eu["latency_ms"]["request"]["count"] == 10 * reports
    assert 3.0 / 1.25 <= eu["latency_ms"]["request"]["p99"] <= 3.0 * 1.25
    assert table.exit_code == 0, table.output
    assert re.search(r"no monitor answered: figures from 1\.\ds of telemetry heard directly",
                     table.stdout)  # fmt: skip


async def test_bad_arguments_are_clear_errors(nats_url: str) -> None:
    cases = [
        (["--window", "soon"], "Invalid value for '--window': not a duration: 'soon'"),
        (["--window", "0s"], "must be more than zero"),
        (["--window", "48h"], "at most 86400 s"),
        (["--region", "eu.west"], "Invalid value for --region"),
        (["--watch", "--json"], "--watch and --json do not go together"),
        (["--nats", "http://x"], "not a NATS URL"),
        (["--count", "-1"], "Invalid value for '--count'"),
    ]
    for args, message in cases:
        result = await proxima("latency", "--nats", nats_url, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


async def test_an_unreachable_bus_is_one_line_error() -> None:
    result = await proxima("latency", "--nats", "nats://127.0.0.1:9")
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot connect to NATS at nats://127.0.0.1:9")
    assert "Traceback" not in result.output
