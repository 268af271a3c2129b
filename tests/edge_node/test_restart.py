"""`proxima edge serve` as a real process: every acknowledged event survives a kill or a stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_node.uplink import Spool
from protocol.codec import decode_msgpack_event
from tests.edge_node.conftest import Keys
from tests.servers import pick_free_port

READY_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 30.0
POLL_INTERVAL_S = 0.05
BATCH_EVENTS = 10
POSTERS = 3


class EdgeProcess:
    """One ``proxima edge serve`` subprocess, logging to a file in its working directory."""

    def __init__(self, workdir: Path, argv: list[str]) -> None:
        self.log_path = workdir / f"edge-{uuid.uuid4().hex[:6]}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_DEADLINE_S
        with httpx.Client(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"the edge exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the edge never became ready:\n{self.log_tail()}")
                time.sleep(POLL_INTERVAL_S)

    def wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the edge did not exit:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Posters:
    """Threads posting batches of fresh events until stopped or the edge goes away.

    Only events answered 202 with all of them accepted count as acknowledged.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: set[str] = set()
        self.answers: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, daemon=True) for _ in range(POSTERS)]

    def __enter__(self) -> Posters:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def running(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def acknowledged_count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + READY_DEADLINE_S
        while self.acknowledged_count() < count:
            assert self.running, f"every poster stopped early; answers {self.answers}"
            assert time.monotonic() < deadline, f"only {self.acknowledged_count()} acknowledged"
            time.sleep(POLL_INTERVAL_S / 5)

    def _post(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                batch = [fresh_event() for _ in range(BATCH_EVENTS)]
                try:
                    response = client.post(f"{self.url}/v1/events", json=batch)
                except httpx.TransportError:
                    return  # the edge went away
                with self._lock:
                    self.answers[response.status_code] = (
                        self.answers.get(response.status_code, 0) + 1
                    )
                    if response.status_code == 202 and response.json()["accepted"] == len(batch):
                        self.acknowledged.update(e["event_id"] for e in batch)


def fresh_event() -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": f"restart-{uuid.uuid4().hex[:10]}",
        "type": "view",
        "item_id": "i001",
        "ts": int(time.time() * 1000),
    }


def spooled_event_ids(spool_dir: Path) -> list[str]:
    event_ids: list[str] = []
    with Spool(spool_dir) as spool:
        while records := spool.read():
            event_ids.extend(decode_msgpack_event(r.payload).event_id for r in records)
    return event_ids


class EdgeLauncher:
    def __init__(self, workdir: Path, keys: Keys, bundle: Path) -> None:
        self.workdir = workdir
        self.keys = keys
        self.bundle = bundle
        self.port = pick_free_port()
        self.spool_dir = workdir / "spool"
        self.processes: list[EdgeProcess] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EdgeProcess:
        argv = [
            sys.executable, "-c", "from central.cli import main; main()",
            "edge", "serve",
            "--bundle", str(self.bundle),
            "--public-key", str(self.keys.public),
            "--region", "eu",
            "--node", "n1",
            "--port", str(self.port),
            "--spool-dir", str(self.spool_dir),
        ]  # fmt: skip
        process = EdgeProcess(self.workdir, argv)
        self.processes.append(process)
        process.wait_ready(self.url)
        return process


@pytest.fixture
def launcher(tmp_path: Path, edge_keys: Keys, edge_bundle: Path) -> Iterator[EdgeLauncher]:
    launcher = EdgeLauncher(tmp_path, edge_keys, edge_bundle)
    yield launcher
    for process in launcher.processes:
        process.kill()


def test_events_acknowledged_before_a_kill_survive_a_restart(launcher: EdgeLauncher) -> None:
    first = launcher.start()
    with Posters(launcher.url) as posters:
        posters.wait_for(300)
        assert posters.running == POSTERS  # still posting when the process dies
        first.process.send_signal(signal.SIGKILL)
        assert first.wait_exit() == -signal.SIGKILL
    acknowledged_before_kill = set(posters.acknowledged)

    second = launcher.start()  # recovers the spool the killed process left
    with Posters(launcher.url) as more:
        more.wait_for(50)
    second.process.send_signal(signal.SIGTERM)
    assert second.wait_exit() == 0, second.log_tail()

    stored = spooled_event_ids(launcher.spool_dir)
    assert len(stored) == len(set(stored))
    missing = acknowledged_before_kill - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost by the kill"
    assert more.acknowledged <= set(stored)


def test_a_clean_stop_while_posting_exits_zero_and_keeps_every_acknowledged_event(
    launcher: EdgeLauncher,
) -> None:
    process = launcher.start()
    with Posters(launcher.url) as posters:
        posters.wait_for(300)
        assert posters.running == POSTERS
        process.process.send_signal(signal.SIGTERM)
        assert process.wait_exit() == 0, process.log_tail()

    stored = spooled_event_ids(launcher.spool_dir)
    assert len(stored) == len(set(stored))
    missing = posters.acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost by the stop"
    assert posters.answers.get(202, 0) * BATCH_EVENTS == len(posters.acknowledged)
