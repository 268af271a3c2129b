"""Import rate of ``proxima lake import`` against reading the same log with ``read_log``.

Generates a shop log (``devtools.loggen``, the generator behind ``proxima generate``),
then times, in one run and on one core, reading it into memory with
:func:`central.datasets.read_log` (the comparison: what ``proxima train`` does with a log
today) and importing it into a fresh lake with :func:`central.lake.importer.import_log`
(parse, spill, day files, one commit). Prints events/s of each, their ratio, and whether
the import reaches the issue's target of 300,000 events/s on one core.

    python bench/lake_import.py --sessions 200000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from central.datasets import read_log
from central.lake.importer import import_log
from devtools.loggen import GeneratorConfig, generate

TARGET_EVENTS_PER_S: Final = 300_000


def timed(action: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    events = action()
    return time.perf_counter() - started, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log", type=Path, help="Use this csv log instead of generating one.")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    work = Path(tempfile.mkdtemp(prefix="lake-import-bench-"))
    try:
        data = args.log
        if data is None:
            data = work / "shop.csv"
            with data.open("w") as out:
                generate(out, GeneratorConfig(sessions=args.sessions, items=args.items, seed=7))
        size_mb = data.stat().st_size / 1e6
        read_rates: list[float] = []
        import_rates: list[float] = []
        for repeat in range(args.repeats):
            seconds, events = timed(lambda: read_log(data, "csv")[0].n_events)
            read_rates.append(events / seconds)
            lake = work / f"lake-{repeat}"
            seconds, events = timed(lambda: import_log(data, "csv", lake).events)  # noqa: B023
            import_rates.append(events / seconds)
            shutil.rmtree(lake)
        read_rate = statistics.median(read_rates)
        import_rate = statistics.median(import_rates)
        print(f"log: {data} ({events:,} events, {size_mb:.0f} MB), {args.repeats} repeats, median")
        print(f"read_log (in memory)    {read_rate:>12,.0f} events/s")
        print(f"lake import (Parquet)   {import_rate:>12,.0f} events/s")
        print(f"ratio import/read_log   {import_rate / read_rate:>12.2f}x")
        verdict = "met" if import_rate >= TARGET_EVENTS_PER_S else "NOT met"
        print(f"target {TARGET_EVENTS_PER_S:,} events/s on one core: {verdict}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work shares the cores)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
