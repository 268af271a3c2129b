"""``proxima central run`` forwards events to Kafka on one NATS connection per role, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaConsumer

from central.keys import write_keypair
from devtools.localservers import KafkaBroker, NatsServer
from protocol.codec import encode_msgpack
from protocol.events import Event
from protocol.subjects import KAFKA_EVENTS_TOPIC, MSG_ID_HEADER
from tests.support import eventually

pytestmark = pytest.mark.integration
EVENTS = 60
ROLES = ("proxima-bridge", "proxima-trainer", "proxima-monitor", "proxima-rollout")
EVENTUALLY_S = 60.0  # a guard against hanging, never a measure of speed


def connections_by_name(bus: NatsServer) -> Counter[str]:
    """The client connections nats-server holds, counted by connection name (``/connz``)."""
    url = f"http://127.0.0.1:{bus.monitor_port}/connz?limit=1024"
    with urllib.request.urlopen(url, timeout=5) as response:
        connz = json.load(response)
    return Counter(str(c.get("name", "")) for c in connz.get("connections") or [])


def lake_event_ids(root: Path) -> set[str]:
    """The event ids in the lake (asserting none is there twice); empty before it exists."""
    from central.lake.layout import open_lake
    from central.lake.tables import read_checked

    if not (root / "events").is_dir():
        return set()
    ids = [i for p in open_lake(root).data_files() for i in read_checked(p, ["event_id"])
           .column("event_id").to_pylist()]  # fmt: skip
    assert len(ids) == len(set(ids)), "an event twice in the lake"
    return set(ids)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[NatsServer, KafkaBroker]]:
    with NatsServer(tmp_path / "nats") as bus, KafkaBroker(tmp_path / "kafka") as log:
        yield bus, log


async def test_bridge_and_trainer_run_together_until_sigterm(
    servers: tuple[NatsServer, KafkaBroker], tmp_path: Path
) -> None:
    bus, log = servers
    private_key, _ = write_keypair(tmp_path / "keys")
    command = [
        sys.executable, "-c", "from central.cli import main; main()", "central", "run",
        "--nats", bus.url, "--kafka", log.bootstrap, "--signing-key", str(private_key),
        "--no-idempotence", "--state-dir", str(tmp_path / "state"), "--partitions", "2",
        "--lake", str(tmp_path / "lake"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = await nats.connect(bus.url)
        jetstream = client.jetstream()
        deadline = time.monotonic() + 30
        while True:  # the bridge creates the stream; publish once it exists
            try:
                await jetstream.stream_info("EVENTS")
                break
            except nats.js.errors.NotFoundError:
                assert time.monotonic() < deadline, "the EVENTS stream never appeared"
                assert process.poll() is None, "proxima central run exited early"
                await asyncio.sleep(0.1)
        for n in range(EVENTS):
            event = Event(event_id=f"run-{n:06d}", session_id=f"s{n % 7}", type="view",
                          item_id=f"i{n}", ts=1_767_225_600_000 + n)  # fmt: skip
            await jetstream.publish("events.eu.n1", encode_msgpack(event),
                                    headers={MSG_ID_HEADER: event.event_id})  # fmt: skip
        await client.close()

        consumer = AIOKafkaConsumer(
            KAFKA_EVENTS_TOPIC, bootstrap_servers=log.bootstrap, auto_offset_reset="earliest",
            group_id="test-reader", session_timeout_ms=2000, heartbeat_interval_ms=500,
        )  # fmt: skip
        await consumer.start()
        seen: set[str] = set()
        try:
            deadline = time.monotonic() + 60
            while len(seen) < EVENTS and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.update(dict(r.headers)["event_id"].decode() for r in records)
        finally:
            await consumer.stop()
        assert seen == {f"run-{n:06d}" for n in range(EVENTS)}

        def every_role_connected() -> bool:
            assert process.poll() is None, "proxima central run exited early"
            return set(ROLES) <= set(connections_by_name(bus))

        await eventually(every_role_connected, "every role's connection", timeout_s=EVENTUALLY_S)
        ours = {n: c for n, c in connections_by_name(bus).items() if n.startswith("proxima")}
        assert ours == dict.fromkeys(ROLES, 1), "one NATS connection per role, named after it"
    finally:
        process.send_signal(signal.SIGTERM)
        # A trainer still joining its consumer group finishes the join before it stops.
        output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output.decode()[-2000:]
    # The lake writer commits what it holds when it stops.
    assert lake_event_ids(tmp_path / "lake") == {f"run-{n:06d}" for n in range(EVENTS)}
