"""An edge and a bridge given a password in their NATS URL never write it out.

Both run as their commands would (``proxima-edge serve``, ``proxima central bridge``) against
a nats-server that wants that user and password; everything they print, logs included, is
read until they report the connection, and once more with a wrong password, where the
errors name the server by host and port only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.keys import write_keypair
from tests.deploy.nats_topology import ConfiguredNatsServer
from tests.servers import LOCALHOST, pick_free_port

pytestmark = pytest.mark.integration

USER = "edge"
PASSWORD = "s3cretPW-not-for-logs"
WRONG = "wr0ngPW-not-for-logs-either"
WAIT_S = 30.0  # a guard against hanging, never a measure of speed


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredNatsServer]:
    workdir = tmp_path_factory.mktemp("nats-auth")

    def render(server: ConfiguredNatsServer) -> str:
        return "\n".join(
            [
                f'listen: "{LOCALHOST}:{server.client_port}"',
                f'http: "{LOCALHOST}:{server.monitor_port}"',
                f'jetstream {{ store_dir: "{server.workdir}" }}',
                f'authorization {{ user: "{USER}", password: "{PASSWORD}" }}',
            ]
        )

    server = ConfiguredNatsServer(workdir, render=render, env={})
    server.start()
    yield server
    server.close()


def url(server: ConfiguredNatsServer, password: str) -> str:
    return f"nats://{USER}:{password}@{LOCALHOST}:{server.client_port}"


def run_until(command: list[str], marker: str, cwd: Path) -> str:
    """Runs ``command`` until its output shows ``marker`` (or WAIT_S), then stops it with
    SIGTERM; returns everything it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
    out = cwd / "output.txt"
    with out.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        try:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and process.poll() is None:
                if marker in out.read_text(encoding="utf-8", errors="replace"):
                    break
                time.sleep(0.1)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    text = out.read_text(encoding="utf-8", errors="replace")
    assert marker in text, text[-3000:]
    return text


def edge_command(tmp_path: Path, nats_url: str) -> list[str]:
    _, public = write_keypair(tmp_path / "keys")
    return [
        sys.executable, "-c", "from edge_node.cli import main; main()", "serve",
        "--region", "eu", "--node", "n1", "--public-key", str(public),
        "--port", str(pick_free_port()), "--nats", nats_url,
        "--spool-dir", str(tmp_path / "spool"), "--bundle-cache-dir", str(tmp_path / "cache"),
        "--log-level", "debug",
    ]  # fmt: skip


def bridge_command(nats_url: str, kafka_bootstrap: str) -> list[str]:
    return [
        sys.executable, "-c", "from central.cli import main; main()", "central", "bridge",
        "--nats", nats_url, "--kafka", kafka_bootstrap, "--no-idempotence",
        "--status-every", "1",
    ]  # fmt: skip


def test_an_edge_logs_the_server_but_not_the_password(
    bus: ConfiguredNatsServer, tmp_path: Path
) -> None:
    text = run_until(edge_command(tmp_path, url(bus, PASSWORD)), "connected to NATS", tmp_path)
    assert f"{LOCALHOST}:{bus.client_port}" in text
    assert PASSWORD not in text


def test_an_edge_refused_by_the_server_names_it_without_the_password(
    bus: ConfiguredNatsServer, tmp_path: Path
) -> None:
    text = run_until(edge_command(tmp_path, url(bus, WRONG)), "uthorization", tmp_path)
    assert WRONG not in text and PASSWORD not in text


def test_a_bridge_logs_the_server_but_not_the_password(
    bus: ConfiguredNatsServer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    text = run_until(bridge_command(url(bus, PASSWORD), kafka_bootstrap), "forwarded", tmp_path)
    assert "connected to NATS" in text
    assert PASSWORD not in text


def test_a_bridge_that_cannot_log_in_says_so_without_the_password(
    bus: ConfiguredNatsServer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    text = run_until(bridge_command(url(bus, WRONG), kafka_bootstrap), "uthorization", tmp_path)
    assert WRONG not in text
