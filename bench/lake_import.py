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


def timed(action: Callable[[], int]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process, and the events the action handled."""
    started, cpu = time.perf_counter(), time.process_time()
    events = action()
    return time.perf_counter() - started, time.process_time() - cpu, events


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
        rates: dict[str, list[tuple[float, float]]] = {"read_log": [], "import": []}
        for repeat in range(args.repeats):
            wall, cpu, events = timed(lambda: read_log(data, "csv")[0].n_events)
            rates["read_log"].append((events / wall, events / cpu))
            lake = work / f"lake-{repeat}"
            wall, cpu, events = timed(lambda: import_log(data, "csv", lake).events)  # noqa: B023
            rates["import"].append((events / wall, events / cpu))
            shutil.rmtree(lake)
        read_wall, read_cpu = (statistics.median(r[i] for r in rates["read_log"]) for i in (0, 1))
        import_wall, import_cpu = (statistics.median(r[i] for r in rates["import"]) for i in (0, 1))
        print(f"log: {data} ({events:,} events, {size_mb:.0f} MB), {args.repeats} repeats, median")
        print(f"{'':24}{'events/s (wall)':>18}{'events/CPU-s':>16}")
        print(f"{'read_log (in memory)':24}{read_wall:>18,.0f}{read_cpu:>16,.0f}")
        print(f"{'lake import (Parquet)':24}{import_wall:>18,.0f}{import_cpu:>16,.0f}")
        print(f"{'ratio import/read_log':24}{import_wall / read_wall:>17.2f}x"
              f"{import_cpu / read_cpu:>15.2f}x")  # fmt: skip
        # Per CPU second is what one core does when it is not shared; wall time counts the
        # waits of a machine other work shares too.
        verdict = "met" if import_cpu >= TARGET_EVENTS_PER_S else "NOT met"
        print(f"target {TARGET_EVENTS_PER_S:,} events per CPU-second on one core: {verdict}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work shares the cores)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
