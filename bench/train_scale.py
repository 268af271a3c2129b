"""How the cost of training grows with the event log (EVALUATION.md, "Training").

For each target size a synthetic shop log is generated with :mod:`devtools.loggen`, read
with :func:`central.datasets.read_log` and trained into a signed bundle with
:func:`central.trainer.pipeline.train_bundle` (default settings, a throwaway key). Reported
per size: events, sessions, items, read time, train+export time split by the pipeline's
progress stages, bundle size, validation HR@20 (fp32 and int8) and peak memory.

Every size is generated in one child process and trained in another, fresh one, so the
peak resident set size of the training child (its own ``ru_maxrss``) belongs to that size
alone; this parent process imports nothing heavy.

    python bench/train_scale.py                      # 100k and 1M events
    python bench/train_scale.py --events 200000 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

DEFAULT_SIZES: Final = (100_000, 1_000_000)
GOAL_EVENTS: Final = 1_000_000
GOAL_SECONDS: Final = 120.0
PILOT_SESSIONS: Final = 5_000


def main() -> None:
    parser = argparse.ArgumentParser(description="Training time and memory as the log grows.")
    parser.add_argument("--events", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="target event counts (default: 100000 1000000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate-child", nargs=2, metavar=("EVENTS", "PATH"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--train-child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_child:
        print(json.dumps(generate_log(int(args.generate_child[0]), Path(args.generate_child[1]),
                                      args.seed)))
        return
    if args.train_child:
        print(json.dumps(train_on(Path(args.train_child), args.seed)))
        return
    if any(size < 1_000 for size in args.events):
        parser.error("--events: every size must be at least 1000")

    runs = []
    with tempfile.TemporaryDirectory(prefix="train-scale-") as directory:
        for target in sorted(args.events):
            path = Path(directory) / f"log-{target}.csv"
            generated = child("--generate-child", str(target), str(path), seed=args.seed)
            trained = child("--train-child", str(path), seed=args.seed)
            path.unlink()
            runs.append({"target_events": target, **generated, **trained})
    report = {"runs": runs, **summary(runs)}
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)


def child(*arguments: str, seed: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), *arguments, "--seed", str(seed)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.stderr.write(finished.stderr)
        raise SystemExit(f"{' '.join(arguments)} failed with status {finished.returncode}")
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


# --- the children ----------------------------------------------------------------------------


def generate_log(target_events: int, path: Path, seed: int) -> dict[str, Any]:
    """Writes a log of about ``target_events`` events, sized from a pilot's events/session."""
    import io

    from devtools.loggen import GeneratorConfig, generate, generate_file

    pilot = generate(io.StringIO(), GeneratorConfig(sessions=PILOT_SESSIONS, seed=seed + 1))
    sessions = max(1, round(target_events * pilot.sessions / pilot.events))
    started = time.perf_counter()
    generate_file(path, GeneratorConfig(sessions=sessions, seed=seed))
    generate_s = time.perf_counter() - started
    return {"generate_s": round(generate_s, 3), "file_bytes": path.stat().st_size}


class StageClock:
    """Splits wall time by the stage the pipeline last reported.

    Time after a stage reports completion and before the next one starts is booked as
    ``after <stage>``, so nothing the pipeline does goes uncounted.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._mark = self.started
        self._current = "before examples"
        self.seconds: dict[str, float] = {}

    def report(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self._book(now)
        self._current = stage if done < total else f"after {stage}"

    def finish(self) -> float:
        now = time.perf_counter()
        self._book(now)
        return now - self.started

    def _book(self, now: float) -> None:
        self.seconds[self._current] = self.seconds.get(self._current, 0.0) + now - self._mark
        self._mark = now


def train_on(path: Path, seed: int) -> dict[str, Any]:
    from central.datasets import read_log
    from central.trainer.pipeline import TrainerConfig, train_bundle
    from protocol.keys import generate_keypair

    started = time.perf_counter()
    log, _ = read_log(path, "csv")
    read_s = time.perf_counter() - started
    private_pem, _ = generate_keypair()
    clock = StageClock()
    result = train_bundle(log, TrainerConfig(seed=seed), version=1, private_key_pem=private_pem,
                          progress=clock.report)
    train_s = clock.finish()
    validation = result.manifest_metrics["validation"]
    return {
        "events": log.n_events,
        "sessions": result.training["sessions"],
        "items": result.training["items"],
        "read_s": round(read_s, 3),
        "train_s": round(train_s, 3),
        "stages_s": {stage: round(seconds, 3) for stage, seconds in clock.seconds.items()},
        "examples": result.training["examples"],
        "bundle_bytes": len(result.bundle),
        "hr_at_20": {precision: figures["hr_at_20"] for precision, figures in validation.items()},
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --- the report ------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"goal": f"{GOAL_EVENTS:,} events trained and exported in "
                                   f"<= {GOAL_SECONDS:.0f} s"}
    at_goal = [run for run in runs if run["target_events"] == GOAL_EVENTS]
    out["goal_met"] = at_goal[0]["train_s"] <= GOAL_SECONDS if at_goal else None
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        out["growth"] = {
            "from_events": small["events"],
            "to_events": large["events"],
            "events_ratio": round(large["events"] / small["events"], 2),
            "train_ratio": round(large["train_s"] / small["train_s"], 2),
            "peak_rss_ratio": round(large["peak_rss_mib"] / small["peak_rss_mib"], 2),
            "bundle_ratio": round(large["bundle_bytes"] / small["bundle_bytes"], 2),
        }
    return out


def print_report(report: dict[str, Any]) -> None:
    for run in report["runs"]:
        hr = run["hr_at_20"]
        print(f"{run['events']:,} events (target {run['target_events']:,}), "
              f"{run['sessions']:,} sessions, {run['items']:,} items")
        print(f"  read {run['read_s']:.2f} s   train+export {run['train_s']:.2f} s   "
              f"peak RSS {run['peak_rss_mib']:,.0f} MiB   bundle {run['bundle_bytes']:,} bytes")
        print(f"  validation HR@20 fp32 {hr.get('fp32', float('nan')):.4f}  "
              f"int8 {hr.get('int8', float('nan')):.4f}   examples {run['examples']:,}")
        for stage, seconds in run["stages_s"].items():
            share = seconds / run["train_s"] if run["train_s"] else 0.0
            print(f"    {stage:<18} {seconds:8.2f} s  {share:6.1%}")
    met = report["goal_met"]
    verdict = "not measured" if met is None else ("met" if met else "NOT met")
    print(f"goal: {report['goal']}: {verdict}")
    growth = report.get("growth")
    if growth:
        print(f"growth {growth['from_events']:,} -> {growth['to_events']:,} events "
              f"(x{growth['events_ratio']}): train+export x{growth['train_ratio']}, "
              f"peak RSS x{growth['peak_rss_ratio']}, bundle x{growth['bundle_ratio']}")


if __name__ == "__main__":
    main()
