"""Events per second through ``Uplink.submit`` for each fsync policy and batch size.

Each cell runs ``--repeat`` times for ``--seconds`` with ``--concurrency`` submitters on a
fresh spool in a temporary directory (``--dir`` to put it on the disk the edge would use);
the table shows the median run, since fsync times on shared machines are noisy. A submitter yields
to the event loop once per submit, as a request handler would. Events are real msgpack-encoded
schema v1 events of about 300 bytes.

    python bench/spool.py [--seconds 0.45] [--repeat 3] [--concurrency 1 32] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from edge_node.uplink import FsyncPolicy, Uplink, UplinkConfig
from protocol.codec import encode_msgpack
from protocol.events import Event

BATCH_SIZES = (1, 10, 100)
POLICIES: tuple[FsyncPolicy, ...] = ("never", "interval", "always")
assert set(POLICIES) == set(get_args(FsyncPolicy))


@dataclass(frozen=True, slots=True)
class Result:
    policy: FsyncPolicy
    batch: int
    concurrency: int
    events_per_s: float
    fsyncs: int
    fsync_ms_mean: float


def make_event(n: int) -> bytes:
    return encode_msgpack(Event(
        event_id=f"01HZX3K9Q8W{n:015d}", session_id=f"session-{n % 977:06d}", type="click",
        ts=1_732_000_000_000 + n, user_id=f"user-{n % 313:06d}", item_id=f"item-{n % 5003:08d}",
        request_id=f"req-{n:012d}", category="shoes/running", price=89.95,
        context={"page": "/p/item", "device": "mobile", "locale": "de-DE", "referrer": "search"},
        received_at=1_732_000_000_123 + n, region="eu-central", node="edge-7",
    ))


async def run_cell(
    directory: Path, policy: FsyncPolicy, batch_size: int, concurrency: int, seconds: float
) -> Result:
    events = [make_event(n) for n in range(batch_size)]
    config = UplinkConfig(directory, fsync=policy, max_pending_events=1_000_000)
    async with Uplink(config) as uplink:
        deadline = time.perf_counter() + seconds
        submitted = 0

        async def submitter() -> None:
            nonlocal submitted
            while time.perf_counter() < deadline:
                await uplink.submit(events)
                submitted += batch_size
                await asyncio.sleep(0)

        started = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        counters = uplink.counters
        fsyncs, fsync_seconds = counters.fsyncs, counters.fsync_seconds_total
    mean_ms = fsync_seconds / fsyncs * 1000 if fsyncs else 0.0
    return Result(policy, batch_size, concurrency, submitted / elapsed, fsyncs, mean_ms)


async def run(
    seconds: float, repeat: int, concurrencies: list[int], base: Path | None
) -> list[Result]:
    results = []
    for concurrency in concurrencies:
        for batch_size in BATCH_SIZES:
            for policy in POLICIES:
                runs = []
                for _ in range(repeat):
                    with tempfile.TemporaryDirectory(prefix="spool-bench-", dir=base) as directory:
                        runs.append(await run_cell(
                            Path(directory), policy, batch_size, concurrency, seconds
                        ))
                runs.sort(key=lambda result: result.events_per_s)
                results.append(runs[len(runs) // 2])
    return results


def print_table(results: list[Result]) -> None:
    never = {(r.batch, r.concurrency): r.events_per_s for r in results if r.policy == "never"}
    header = (
        f"{'submitters':>10} {'batch':>5} {'policy':>9} {'events/s':>11} {'vs never':>9}"
        f" {'fsyncs':>7} {'fsync ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r.events_per_s / never[(r.batch, r.concurrency)]
        print(
            f"{r.concurrency:>10} {r.batch:>5} {r.policy:>9} {r.events_per_s:>11,.0f}"
            f" {ratio:>8.2f}x {r.fsyncs:>7} {r.fsync_ms_mean:>9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.45, help="duration of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--dir", type=Path, default=None, help="where the spools go")
    args = parser.parse_args()
    print(f"event size: {len(make_event(0))} bytes msgpack")
    print_table(asyncio.run(run(args.seconds, args.repeat, args.concurrency, args.dir)))


if __name__ == "__main__":
    main()
