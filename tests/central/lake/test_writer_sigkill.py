"""A lake writer killed (SIGKILL) at random moments while events arrive, then started again,
leaves every event in the lake exactly once, with no gap in any partition's offsets."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.central.lake.streams import encoded, fresh_topic, lake_table, make_events, produce
from tests.support import eventually

pytestmark = pytest.mark.integration
EVENTUALLY_S = 120.0  # a guard against hanging, never a measure of speed
EVENTS = 6_000
BATCH = 100
KILLS = 5


def start_writer(bootstrap: str, topic: str, lake: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-c", "from central.cli import main; main()", "lake", "write",
        "--kafka", bootstrap, "--topic", topic, "--lake", str(lake),
        "--group-id", f"{topic}-writers", "--roll-interval", "0.1",
        "--maintenance-interval", "0.5", "--compact-min-files", "4", "--session-timeout", "2",
    ]  # fmt: skip
    with log.open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


def assignments(log: Path) -> int:
    return log.read_text().count("lake writer assigned [") if log.exists() else 0


def at_work(log: Path, kills: int) -> Callable[[], bool]:
    return lambda: assignments(log) > kills


def rows_in(lake: Path) -> int:
    try:
        return lake_table(lake).num_rows if (lake / "events").exists() else 0
    except Exception:  # a file may vanish under a reader while it is compacted
        return -1


async def test_sigkilled_writer_leaves_no_gap_and_no_duplicate(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = await fresh_topic(kafka_bootstrap, partitions=3)
    events = make_events(EVENTS, days=2)
    values, keys = encoded(events)
    lake, log = tmp_path / "lake", tmp_path / "writer.log"
    randomness = random.Random(11)

    async def feed() -> None:
        for start in range(0, EVENTS, BATCH):
            await produce(kafka_bootstrap, topic, values[start : start + BATCH],
                          keys[start : start + BATCH])  # fmt: skip
            await asyncio.sleep(0.6)

    feeding = asyncio.create_task(feed())
    kills = 0
    try:
        while kills < KILLS:
            process = start_writer(kafka_bootstrap, topic, lake, log)
            await eventually(at_work(log, kills), "the writer at work", timeout_s=EVENTUALLY_S)
            await asyncio.sleep(randomness.uniform(0.1, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        await feeding
        process = start_writer(kafka_bootstrap, topic, lake, log)
        try:
            await eventually(lambda: log.read_text().count("lake writer running") > KILLS,
                             "the last writer at work", timeout_s=EVENTUALLY_S)  # fmt: skip
            await eventually(lambda: rows_in(lake) >= EVENTS, "every event in the lake",
                             timeout_s=EVENTUALLY_S)  # fmt: skip
            await asyncio.sleep(1.0)  # anything written twice would show by now
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        feeding.cancel()
    table = lake_table(lake)
    ids = table.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == EVENTS
    assert set(ids) == {e.event_id for e in events}
    for partition in range(3):
        offsets = sorted(
            o for p, o in zip(table.column("kafka_partition").to_pylist(),
                              table.column("kafka_offset").to_pylist(), strict=True)
            if p == partition
        )  # fmt: skip
        assert offsets == list(range(len(offsets))), f"gap in partition {partition}"
    text = log.read_text()
    assert "Traceback" not in text
    resumed_at = {
        sum(int(offset) for offset in re.findall(r": (\d+)", line))
        for line in text.splitlines()
        if "resuming at" in line
    }
    assert len(resumed_at) >= 3, "the kills did not hit a writer at work"
