"""``proxima demo`` end to end: it runs, reports, stops on time or on a signal, and leaves
no process and no directory behind."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-c", "from central.cli import main; main()", "demo", "--sessions", "300"]
SAFETY_TIMEOUT_S = 120  # only so a hung demo fails the test instead of blocking the run


def processes_mentioning(path: Path) -> list[str]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(process.info["cmdline"] or ())
        if str(path) in command:
            found.append(f"{process.info['pid']}: {command}")
    return found


def working_directory(output: str) -> Path:
    match = re.search(r"working directory: (\S+)", output)
    assert match, output
    return Path(match.group(1))


def assert_nothing_left(parent: Path, output: str) -> None:
    assert not working_directory(output).exists()
    assert list(parent.iterdir()) == []
    assert processes_mentioning(parent) == []


def test_demo_serves_replays_reports_and_cleans_up_after_its_duration(tmp_path: Path) -> None:
    completed = subprocess.run(
        [*DEMO, "--duration", "20", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT_S,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert working_directory(out).parent == tmp_path
    assert "Recommendation latency per region (ms)" in out
    for edge in ("eu/edge-1", "us/edge-1"):
        # calls, then client and server p50/p95/p99: every figure measured, none missing
        assert re.search(rf"│ {edge}\s+│\s+[\d,]+ │(\s+\d+\.\d\d │){{6}}", out), out
    assert re.search(r"failed requests \(not 2xx\)\s+│\s+0 │\s+0 │\s+0 │", out), out
    accepted = re.search(r"│   accepted\s+│\s+[\d,]+ │\s+[\d,]+ │\s+([\d,]+) │", out)
    assert accepted and int(accepted.group(1).replace(",", "")) > 0, out
    assert "validation fp32" in out and "HR@20" in out
    urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/metrics|/openapi\.json|/v1/model)?", out)
    ports = {port for port, _ in urls}
    assert len(ports) == 2, urls
    for path in ("/metrics", "/openapi.json", "/v1/model"):
        assert {port for port, route in urls if route == path} == ports
    assert re.search(r"curl -s 'http://127\.0\.0\.1:\d+/v1/recommendations\?session_id=", out)
    assert_nothing_left(tmp_path, out)


def test_demo_stops_everything_on_sigterm_while_serving(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [*DEMO, "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        seen: list[str] = []
        for line in demo.stdout:
            seen.append(line)
            if "Edges are serving" in line:
                break
        assert seen and "Edges are serving" in seen[-1], "".join(seen)
        assert processes_mentioning(tmp_path), "the demo's children should be running"
        demo.send_signal(signal.SIGTERM)
        rest, errors = demo.communicate(timeout=SAFETY_TIMEOUT_S)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    out = "".join(seen) + rest
    assert demo.returncode == 0, errors
    assert "SIGTERM: stopping." in out
    assert_nothing_left(tmp_path, out)
