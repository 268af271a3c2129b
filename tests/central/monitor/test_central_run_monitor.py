"""``proxima central run --metrics-port``: the monitor runs inside, answers, and is scraped."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from click.testing import CliRunner

from central.cli import main
from central.keys import write_keypair
from devtools.localservers import KafkaBroker, NatsServer, pick_free_port
from tests.central.monitor.conftest import EVENTUALLY_S, publish
from tests.central.monitor.reports import repeated, report

pytestmark = pytest.mark.integration


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[NatsServer, KafkaBroker]]:
    with NatsServer(tmp_path / "nats") as bus, KafkaBroker(tmp_path / "kafka") as log:
        yield bus, log


async def scrape_until(url: str, wanted: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + EVENTUALLY_S
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            assert process.poll() is None, "proxima central run exited early"
            try:
                text = (await http.get(url)).text
            except httpx.TransportError:
                text = ""
            if wanted in text:
                return text
            assert time.monotonic() < deadline, f"never scraped {wanted!r}; last:\n{text}"
            await asyncio.sleep(0.1)


async def test_central_run_serves_monitor_answers_and_metrics(
    servers: tuple[NatsServer, KafkaBroker], tmp_path: Path
) -> None:
    bus, log = servers
    private_key, _ = write_keypair(tmp_path / "keys")
    port = pick_free_port()
    command = [
        sys.executable, "-c", "from central.cli import main; main()", "central", "run",
        "--nats", bus.url, "--kafka", log.bootstrap, "--signing-key", str(private_key),
        "--no-idempotence", "--state-dir", str(tmp_path / "state"), "--partitions", "1",
        "--metrics-port", str(port), "--lake", str(tmp_path / "lake"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        await scrape_until(metrics_url, "proxima_monitor_connected 1.0", process)
        client = await nats.connect(bus.url)
        try:
            fresh = report(node="n1", sent_at=time.time(), stages={"request": repeated(0.002, 12)})
            await publish(client, fresh)
        finally:
            await client.close()
        text = await scrape_until(
            metrics_url, 'proxima_node_silent{node="n1",region="eu"}', process
        )
        assert 'proxima_monitor_reports_total{outcome="accepted"} 1.0' in text
        assert 'proxima_region_latency_seconds{quantile="0.99",region="eu",stage="request"}' in text

        result = await asyncio.to_thread(
            CliRunner().invoke, main, ["latency", "--json", "--nats", bus.url]
        )
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert body["source"] == "monitor"
        assert body["regions"][0]["latency_ms"]["request"]["count"] == 12
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output.decode()[-2000:]
