"""How import and training grow with the event log: the lake on DuckDB against today's
in-memory path (EVALUATION.md, "Training").

For each size a synthetic shop log (:mod:`devtools.loggen`, 200,000 items) is generated;
then, each in a fresh child process so its peak memory belongs to it alone:

* lake: the log is imported into a lake (:func:`central.training.lakefile.import_into_lake`,
  i.e. ``proxima lake import`` where it is installed) and trained out of core
  (:func:`central.training.pipeline.train_from_lake`, DuckDB, ``--memory-limit``);
* memory: the log is read whole (:func:`central.datasets.read_log`) and trained by
  :func:`central.trainer.pipeline.train_bundle`, on the sizes up to ``--memory-max``.

Reported per size and path: import (or read) rate, train time split by stage (tables,
examples, fit, export, validate), validation HR@20 and peak RSS: the child's own, and the
largest sum over it and its replay workers sampled every 0.2 s. Then the ratios of the
lake path to the memory path at each size both ran, the growth from the smallest to the
largest size, and the targets (peak RSS <= 3 GiB at every size; 26M events imported and
trained in <= 15 minutes).

    python bench/train_scale.py --sizes 1M 4M              # a short run
    python bench/train_scale.py --sizes 1M 4M 16M 26M      # the whole picture
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

DEFAULT_SIZES: Final = ("1M", "4M", "16M")
EVENTS_PER_SESSION: Final = 6.53  # loggen's, measured on 1M sessions
ITEMS: Final = 200_000
RSS_GOAL_MIB: Final = 3 * 1024
GOAL_EVENTS: Final = 26_000_000
GOAL_SECONDS: Final = 15 * 60.0
STAGES: Final = ("tables", "examples", "fit", "export", "validate")


def parse_events(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 1M or 250k")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description="Import and training as the log grows.")
    parser.add_argument("--sizes", type=parse_events, nargs="+",
                        default=[parse_events(s) for s in DEFAULT_SIZES],
                        help="target event counts (default: 1M 4M 16M)")
    parser.add_argument("--memory-max", type=parse_events, default=parse_events("4M"),
                        help="largest size the in-memory path is run on (default 4M)")
    parser.add_argument("--memory-limit", default="2GiB", help="DuckDB's memory limit")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "PATH", "LIMIT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, path, limit = args.child
        work = {"generate": generate, "lake": train_lake, "memory": train_memory}[what]
        print(json.dumps(work(Path(path), limit, args.seed)))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="train-scale-") as directory:
        for target in sorted(args.sizes):
            path = Path(directory) / f"log-{target}.csv"
            run: dict[str, Any] = {"target_events": target}
            run["generated"] = child("generate", path, str(target), args.seed)
            run["lake"] = child("lake", path, args.memory_limit, args.seed)
            if target <= args.memory_max:
                run["memory"] = child("memory", path, args.memory_limit, args.seed)
            path.unlink()
            runs.append(run)
            if not args.json:
                print_run(run)
    report = {"runs": runs, **summary(runs)}
    if args.json:
        print(json.dumps(report))
    else:
        print_summary(report)


def child(what: str, path: Path, limit: str, seed: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", what, str(path),
               limit, "--seed", str(seed)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.stderr.write(finished.stderr[-4000:])
        raise SystemExit(f"{what} {path.name} failed with status {finished.returncode}")
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


# --- the children ----------------------------------------------------------------------------


def generate(path: Path, target: str, seed: int) -> dict[str, Any]:
    from devtools.loggen import GeneratorConfig, generate_file

    sessions = max(10, round(int(target) / EVENTS_PER_SESSION))
    started = time.perf_counter()
    stats = generate_file(path, GeneratorConfig(sessions=sessions, items=ITEMS, seed=seed))
    return {"events": stats.events, "sessions": sessions, "seconds": _since(started),
            "file_bytes": path.stat().st_size}


class TreeMemory:
    """The peak of this process's RSS plus its children's, sampled in a thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = self._process.memory_info().rss
            for process in self._process.children(recursive=True):
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / (1024 * 1024)


class StageClock:
    """Wall time by the stage the pipeline last reported (the time between stages too)."""

    def __init__(self) -> None:
        self.started = self._mark = time.perf_counter()
        self._current = "start"
        self.seconds: dict[str, float] = {}

    def report(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.seconds[self._current] = self.seconds.get(self._current, 0.0) + now - self._mark
        self._mark = now
        self._current = stage if done < total else f"after {stage}"

    def finish(self) -> float:
        self.report("end", 1, 1)
        return time.perf_counter() - self.started

    def by_stage(self) -> dict[str, float]:
        """Seconds per stage; the time after a stage up to the next one goes to it."""
        out: dict[str, float] = {}
        for name, seconds in self.seconds.items():
            stage = name.removeprefix("after ")
            out[stage] = round(out.get(stage, 0.0) + seconds, 3)
        return out


def train_lake(path: Path, limit: str, seed: int) -> dict[str, Any]:
    from central.trainer.pipeline import TrainerConfig
    from central.training.engine import EngineSettings, parse_size
    from central.training.lakefile import import_into_lake
    from central.training.pipeline import LakeTrainConfig, train_from_lake
    from protocol.keys import generate_keypair

    memory = TreeMemory()
    with tempfile.TemporaryDirectory(prefix="lake-", dir=path.parent) as lake:
        started = time.perf_counter()
        import_into_lake(path, "csv", lake, skip_bad_rows=False)
        import_s = _since(started)
        import_rss = memory.peak / (1024 * 1024)
        config = LakeTrainConfig(
            trainer=TrainerConfig(seed=seed),
            engine=EngineSettings(memory_limit_mib=parse_size(limit) // (1024 * 1024)),
        )
        clock = StageClock()
        result = train_from_lake(lake, config, version=1, private_key_pem=generate_keypair()[0],
                                 progress=clock.report)
        train_s = clock.finish()
    return _figures(result, import_s, train_s, clock, memory.stop(), import_rss)


def train_memory(path: Path, limit: str, seed: int) -> dict[str, Any]:
    from central.datasets import read_log
    from central.trainer.pipeline import TrainerConfig, train_bundle
    from protocol.keys import generate_keypair

    memory = TreeMemory()
    started = time.perf_counter()
    log, _ = read_log(path, "csv")
    read_s = _since(started)
    read_rss = memory.peak / (1024 * 1024)
    clock = StageClock()
    result = train_bundle(log, TrainerConfig(seed=seed), version=1,
                          private_key_pem=generate_keypair()[0], progress=clock.report)
    train_s = clock.finish()
    return _figures(result, read_s, train_s, clock, memory.stop(), read_rss)


def _figures(result: Any, import_s: float, train_s: float, clock: StageClock, tree_mib: float,
             import_mib: float) -> dict[str, Any]:
    events = int(result.training["events"])
    validation = result.manifest_metrics["validation"]
    return {
        "events": events,
        "sessions": result.training["sessions"],
        "items": result.training["items"],
        "examples": result.training["examples"],
        "import_s": round(import_s, 3),
        "import_events_per_s": round(events / import_s) if import_s else None,
        "import_peak_rss_mib": round(import_mib, 1),
        "train_s": round(train_s, 3),
        "stages_s": clock.by_stage(),
        "total_s": round(import_s + train_s, 3),
        "hr_at_20": validation["fp32"]["hr_at_20"],
        "bundle_bytes": len(result.bundle),
        "peak_rss_mib": round(_own_peak_mib(), 1),
        "peak_tree_rss_mib": round(tree_mib, 1),
    }


def _own_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


# --- the report ------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ratios = []
    for run in runs:
        if "memory" in run:
            lake, memory = run["lake"], run["memory"]
            ratios.append({
                "events": lake["events"],
                "total_s": round(lake["total_s"] / memory["total_s"], 3),
                "train_s": round(lake["train_s"] / memory["train_s"], 3),
                "peak_rss": round(lake["peak_tree_rss_mib"] / memory["peak_tree_rss_mib"], 3),
                "hr_at_20": round(lake["hr_at_20"] / memory["hr_at_20"], 3)
                if memory["hr_at_20"] else None,
            })
    out["lake_over_memory"] = ratios
    if len(runs) >= 2:
        growth = {}
        for path in ("lake", "memory"):
            done = [run[path] for run in runs if path in run]
            if len(done) >= 2:
                small, large = done[0], done[-1]
                growth[path] = {
                    "from_events": small["events"], "to_events": large["events"],
                    "events": round(large["events"] / small["events"], 2),
                    "total_s": round(large["total_s"] / small["total_s"], 2),
                    "peak_rss": round(large["peak_tree_rss_mib"] / small["peak_tree_rss_mib"], 2),
                }
        out["growth"] = growth
    out["rss_goal_met"] = all(run["lake"]["peak_tree_rss_mib"] <= RSS_GOAL_MIB for run in runs)
    at_goal = [run["lake"] for run in runs if run["lake"]["events"] >= GOAL_EVENTS]
    out["time_goal_met"] = at_goal[0]["total_s"] <= GOAL_SECONDS if at_goal else None
    return out


def print_run(run: dict[str, Any]) -> None:
    generated = run["generated"]
    print(f"{generated['events']:,} events, {generated['sessions']:,} sessions, {ITEMS:,} items "
          f"(generated in {generated['seconds']:.0f} s)")
    for path in ("lake", "memory"):
        if path not in run:
            continue
        r = run[path]
        stages = "  ".join(f"{stage} {r['stages_s'].get(stage, 0.0):.1f}" for stage in STAGES)
        verb = "import" if path == "lake" else "read"
        print(f"  {path:<6} {verb} {r['import_s']:.1f} s ({r['import_events_per_s']:,}/s)  "
              f"train {r['train_s']:.1f} s  total {r['total_s']:.1f} s  "
              f"peak RSS {r['peak_rss_mib']:,.0f} MiB (with workers {r['peak_tree_rss_mib']:,.0f})"
              f"  HR@20 {r['hr_at_20']:.4f}  examples {r['examples']:,}")
        print(f"         stages s: {stages}")
    sys.stdout.flush()


def print_summary(report: dict[str, Any]) -> None:
    for ratio in report["lake_over_memory"]:
        print(f"lake / memory at {ratio['events']:,} events: total x{ratio['total_s']}, "
              f"train x{ratio['train_s']}, peak RSS x{ratio['peak_rss']}, "
              f"HR@20 x{ratio['hr_at_20']}")
    for path, growth in report.get("growth", {}).items():
        print(f"growth {path}: {growth['from_events']:,} -> {growth['to_events']:,} events "
              f"(x{growth['events']}): total time x{growth['total_s']}, "
              f"peak RSS x{growth['peak_rss']}")
    print(f"peak RSS <= {RSS_GOAL_MIB} MiB at every size (lake): "
          f"{'met' if report['rss_goal_met'] else 'NOT met'}")
    met = report["time_goal_met"]
    verdict = "not measured" if met is None else ("met" if met else "NOT met")
    print(f"{GOAL_EVENTS:,} events imported and trained in <= {GOAL_SECONDS / 60:.0f} min: "
          f"{verdict}")


if __name__ == "__main__":
    main()
