"""Events per second from a pre-filled spool into JetStream through ``EventPublisher``.

For each batch size, ``--repeat`` runs: a fresh spool is filled with ``--events`` msgpack
events of about 300 bytes (not timed), then one publisher drains it into the ``EVENTS``
stream of a local nats-server (started here in a temporary directory unless ``--nats`` names
one); the clock runs from ``start()`` until the spool is committed to the end. The table
shows the median run and this process's CPU seconds per 10k events (the publisher's cost;
and nats-server's when this script started it; both run on the same machine).

    python bench/pipeline_publish.py [--events 50000] [--batch 64 256 1024] [--repeat 3]
                                     [--nats nats://host:4222] [--dir /var/tmp]

:func:`drain_spool` is the building block for a longer pipeline bench (edge to Kafka).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.localservers import NatsServer
from edge_node.uplink import Spool, Uplink, UplinkConfig
from edge_node.uplink.publisher import EventPublisher
from protocol.codec import decode_msgpack_event, encode_msgpack
from protocol.events import Event
from runtime.nats import NatsSettings
from runtime.supervisor import BusSupervisor

REGION = "bench"
FILL_CHUNK = 1000
POLL_S = 0.005


@dataclass(frozen=True, slots=True)
class DrainResult:
    batch: int
    events: int
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float | None  # when the server's pid is known
    publish_errors: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_ms_per_10k(self) -> float:
        return self.cpu_seconds / self.events * 10_000 * 1000

    @property
    def server_cpu_ms_per_10k(self) -> float | None:
        if self.server_cpu_seconds is None:
            return None
        return self.server_cpu_seconds / self.events * 10_000 * 1000


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_event(n: int) -> bytes:
    return encode_msgpack(Event(
        event_id=f"01HZX3K9Q8W{n:015d}", session_id=f"session-{n % 977:06d}", type="click",
        ts=1_732_000_000_000 + n, user_id=f"user-{n % 313:06d}", item_id=f"item-{n % 5003:08d}",
        request_id=f"req-{n:012d}", category="shoes/running", price=89.95,
        context={"page": "/p/item", "device": "mobile", "locale": "de-DE", "referrer": "search"},
        received_at=1_732_000_000_123 + n, region="eu-central", node="edge-7",
    ))


def fill_spool(directory: Path, events: int) -> None:
    with Spool(directory) as spool:
        for start in range(0, events, FILL_CHUNK):
            spool.append([make_event(n) for n in range(start, min(events, start + FILL_CHUNK))])
        spool.fsync()


async def drain_spool(
    directory: Path, nats_url: str, *, batch: int, node: str, server_pid: int | None = None
) -> DrainResult:
    """Publishes everything pending in the spool at ``directory``; timed from start()."""
    async with Uplink(UplinkConfig(directory, fsync="never")) as uplink:
        events = uplink.spool.pending_records
        bus = BusSupervisor(NatsSettings(servers=(nats_url,), name="bench-publisher"))
        publisher = EventPublisher(uplink, bus, region=REGION, node=node, batch=batch)
        server_started = process_cpu_seconds(server_pid) if server_pid else 0.0
        cpu_started, started = time.process_time(), time.perf_counter()
        await bus.start()
        await publisher.start()
        try:
            while publisher.status.pending_records:
                await asyncio.sleep(POLL_S)
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            server_cpu = process_cpu_seconds(server_pid) - server_started if server_pid else None
        finally:
            await publisher.close(timeout_s=10.0)
            await bus.close()
        return DrainResult(
            batch, events, seconds, cpu_seconds, server_cpu, publisher.status.publish_errors
        )


async def run(
    server: tuple[str, int | None], batches: list[int], events: int, repeat: int, base: Path | None
) -> list[DrainResult]:
    nats_url, server_pid = server
    medians = []
    for batch in batches:
        runs = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="publish-bench-", dir=base) as directory:
                spool_dir = Path(directory) / "spool"
                fill_spool(spool_dir, events)
                node = f"node-{uuid.uuid4().hex[:8]}"
                runs.append(await drain_spool(
                    spool_dir, nats_url, batch=batch, node=node, server_pid=server_pid
                ))
        runs.sort(key=lambda result: result.events_per_s)
        medians.append(runs[len(runs) // 2])
    return medians


def decode_us_per_event(count: int = 20_000) -> float:
    """What reading the event id (a full schema check) costs per record."""
    payloads = [make_event(n) for n in range(count)]
    started = time.perf_counter()
    for payload in payloads:
        decode_msgpack_event(payload)
    return (time.perf_counter() - started) / count * 1e6


@contextlib.contextmanager
def nats_server(url: str | None) -> Iterator[tuple[str, int | None]]:
    """(url, pid): the server named, or one started here (its pid lets us read its CPU)."""
    if url is not None:
        yield url, None
        return
    with (
        tempfile.TemporaryDirectory(prefix="publish-bench-nats-") as directory,
        NatsServer(Path(directory)) as server,
    ):
        yield server.url, server.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events in the spool")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeat", type=int, default=3, help="runs per batch; median shown")
    parser.add_argument("--nats", default=None, help="a running server (default: start one)")
    parser.add_argument("--dir", type=Path, default=None, help="where the spools go")
    args = parser.parse_args()
    print(f"event size: {len(make_event(0))} bytes msgpack; "
          f"decoding one for its id: {decode_us_per_event():.1f} us")
    with nats_server(args.nats) as server:
        results = asyncio.run(run(server, args.batch, args.events, args.repeat, args.dir))
    header = (
        f"{'batch':>6} {'events':>7} {'seconds':>8} {'events/s':>10}"
        f" {'cpu ms/10k':>11} {'server cpu ms/10k':>18} {'errors':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        server_cpu = r.server_cpu_ms_per_10k
        server_column = f"{server_cpu:>18.0f}" if server_cpu is not None else f"{'-':>18}"
        print(f"{r.batch:>6} {r.events:>7} {r.seconds:>8.2f} {r.events_per_s:>10,.0f}"
              f" {r.cpu_ms_per_10k:>11.0f} {server_column} {r.publish_errors:>7}")


if __name__ == "__main__":
    main()
