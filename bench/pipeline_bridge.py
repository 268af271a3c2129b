"""Events per second through the bridge, from a JetStream backlog into Kafka.

Starts a real nats-server (file storage) and a Tansu Kafka-protocol broker, pre-publishes
``--events`` schema v1 events of about 300 bytes to the EVENTS stream (``Nats-Msg-Id`` set,
as edges publish them), then, for each ``--batch`` size and ``--depth`` (batches in flight to
Kafka at once), ``--repeat`` times, runs a :class:`central.bridge.Bridge` in this process
with a fresh durable consumer into a fresh topic and times it from the end of ``start()``
until Kafka has acknowledged every event. The topic is then read back to check that exactly
``--events`` distinct events arrived, once each (Tansu's end offsets undercount, so records
are consumed rather than counted from offsets). Tansu refuses idempotent producers, so the
bridge runs with idempotence off.

The bridge shares this machine's cores with both servers, as it would on a small host; the
table shows each run, the process CPU time per event, and the median per configuration. The
machine may be shared: the load average is printed before and after.

    python bench/pipeline_bridge.py [--events 50000] [--batch 100 500 1000 2000] [--depth 1 2]
                                    [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nats
from aiokafka import AIOKafkaConsumer

from central.bridge import Bridge
from central.kafka_settings import KafkaSettings
from protocol.codec import encode_msgpack
from protocol.events import Event
from protocol.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, MSG_ID_HEADER, events_subject
from runtime.nats import NatsSettings

ROOT: Final = Path(__file__).resolve().parent.parent
GOAL_EVENTS_PER_S: Final = 20_000
SESSIONS: Final = 5_000
_POLL_S: Final = 0.01
_RUN_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class Run:
    batch: int
    depth: int
    repeat: int
    seconds: float
    cpu_seconds: float
    setup_seconds: float
    records_in_kafka: int
    distinct_in_kafka: int
    errors: int

    def events_per_s(self, events: int) -> float:
        return events / self.seconds


def make_event(n: int) -> bytes:
    return encode_msgpack(Event(
        event_id=f"01HZX3K9Q8W{n:015d}", session_id=f"session-{n % SESSIONS:06d}", type="click",
        ts=1_732_000_000_000 + n, user_id=f"user-{n % 313:06d}", item_id=f"item-{n % 5003:08d}",
        request_id=f"req-{n:012d}", category="shoes/running", price=89.95,
        context={"page": "/p/item", "device": "mobile", "locale": "de-DE", "referrer": "search"},
        received_at=1_732_000_000_123 + n, region="eu-central", node="edge-7",
    ))  # fmt: skip


async def prepublish(nats_url: str, events: int) -> tuple[float, int]:
    """Publishes the backlog; returns (events/s published, average event size in bytes)."""
    connection = await nats.connect(nats_url)
    try:
        jetstream = connection.jetstream()
        await jetstream.add_stream(
            name=EVENTS_STREAM, subjects=[EVENTS_SUBJECTS], storage="file", duplicate_window=120.0
        )
        subject = events_subject("eu-central", "edge-7")
        payloads = [make_event(n) for n in range(events)]
        started = time.perf_counter()
        for n, payload in enumerate(payloads):
            headers = {MSG_ID_HEADER: f"01HZX3K9Q8W{n:015d}"}
            await jetstream.publish_async(subject, payload, headers=headers, wait_stall=10.0)
        await jetstream.publish_async_completed()
        rate = events / (time.perf_counter() - started)
        stored = (await jetstream.stream_info(EVENTS_STREAM)).state.messages
        if stored != events:
            raise SystemExit(f"the stream holds {stored} messages, expected {events}")
        return rate, sum(map(len, payloads)) // events
    finally:
        await connection.close()


async def distinct_events_in(bootstrap: str, topic: str, expected: int) -> tuple[int, int]:
    """Reads the topic back: (records, distinct event ids). Tansu's end offsets undercount, so
    the records are consumed rather than counted from offsets."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
        auto_offset_reset="earliest", group_id=None,
    )  # fmt: skip
    await consumer.start()
    records, event_ids = 0, set[bytes]()
    try:
        idle_rounds = 0
        while (idle_rounds < 3 and records < expected) or idle_rounds < 1:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            fetched = [record for batch in batches.values() for record in batch]
            idle_rounds = 0 if fetched else idle_rounds + 1
            records += len(fetched)
            event_ids.update(dict(record.headers)["event_id"] for record in fetched)
    finally:
        await consumer.stop()
    return records, len(event_ids)


async def bridge_run(
    nats_url: str, bootstrap: str, events: int, config: tuple[int, int], repeat: int,
    partitions: int,
) -> Run:  # fmt: skip
    batch, depth = config
    name = f"b{batch}-d{depth}-r{repeat}"
    bridge = Bridge(
        NatsSettings.from_url(nats_url),
        KafkaSettings.from_bootstrap(bootstrap, topic=f"bench.{name}", dlq_topic=f"dlq.{name}"),
        durable=f"bench-{name}",
        batch=batch,
        partitions=partitions,
        idempotent=False,
        pipeline_depth=depth,
    )
    setup_started = time.perf_counter()
    await bridge.start()  # stream, consumer and topics exist, producer connected
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        while bridge.status.forwarded < events:
            if time.perf_counter() - started > _RUN_TIMEOUT_S:
                raise SystemExit(f"{name}: only {bridge.status.forwarded} after the timeout")
            await asyncio.sleep(_POLL_S)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await bridge.close()
    records, distinct = await distinct_events_in(bootstrap, f"bench.{name}", events)
    return Run(
        batch, depth, repeat, seconds, cpu_seconds, started - setup_started, records, distinct,
        bridge.status.errors,
    )  # fmt: skip


async def measure(
    nats_url: str,
    bootstrap: str,
    events: int,
    configs: Sequence[tuple[int, int]],
    repeats: int,
    partitions: int,
) -> list[Run]:
    rate, size = await prepublish(nats_url, events)
    print(f"pre-published {events:,} events of ~{size} bytes at {rate:,.0f}/s")
    runs = []
    for repeat in range(repeats):
        for config in configs:  # interleaved, so a noisy moment does not hit one config only
            run = await bridge_run(nats_url, bootstrap, events, config, repeat, partitions)
            print(
                f"  batch {run.batch:>5} depth {run.depth}: "
                f"{run.events_per_s(events):>7,.0f} events/s, "
                f"{run.cpu_seconds / events * 1e6:4.1f} µs CPU/event "
                f"({run.seconds:.2f} s after {run.setup_seconds:.2f} s of setup; "
                f"{run.records_in_kafka:,} records, {run.distinct_in_kafka:,} distinct events "
                f"in Kafka; {run.errors} errors)"
            )
            runs.append(run)
    return runs


def report(runs: Sequence[Run], events: int, configs: Sequence[tuple[int, int]]) -> None:
    print(f"\nmedian events/s through the bridge (goal >= {GOAL_EVENTS_PER_S:,}):")
    for batch, depth in configs:
        mine = [run for run in runs if (run.batch, run.depth) == (batch, depth)]
        rates = [run.events_per_s(events) for run in mine]
        cpu = statistics.median(run.cpu_seconds / events * 1e6 for run in mine)
        exact = all(run.records_in_kafka == run.distinct_in_kafka == events for run in mine)
        verdict = "PASS" if statistics.median(rates) >= GOAL_EVENTS_PER_S else "FAIL"
        print(
            f"  batch {batch:>5} depth {depth}: {statistics.median(rates):>7,.0f}  "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f}; {cpu:.1f} µs CPU/event)  {verdict}"
            f"{'' if exact else '  RECORD COUNT MISMATCH'}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500, 1000, 2000])
    parser.add_argument("--depth", type=int, nargs="+", default=[1])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    configs = [(batch, depth) for batch in args.batch for depth in args.depth]
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.servers import KafkaBroker, NatsServer

    with (
        tempfile.TemporaryDirectory(prefix="proxima-bench-bridge-") as workdir,
        NatsServer(Path(workdir) / "nats") as nats_server,
        KafkaBroker(Path(workdir) / "kafka") as broker,
    ):
        coroutine = measure(
            nats_server.url, broker.bootstrap, args.events, configs, args.repeat, args.partitions
        )
        try:
            import uvloop
        except ImportError:
            runs = asyncio.run(coroutine)
        else:
            runs = uvloop.run(coroutine)
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    report(runs, args.events, configs)


if __name__ == "__main__":
    main()
