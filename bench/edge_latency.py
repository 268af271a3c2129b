"""Edge answer under load: requests/s and p50/p99 of ``GET /v1/recommendations``, as ratios.

One run does everything (EVALUATION.md, "Performance: side by side, as ratios"):

1. prepare: generate a synthetic shop log (:mod:`devtools.loggen`) and train a signed bundle
   on it with a throwaway key (or take ``--bundle``/``--public-key``); fit the scikit-learn
   ``StandardScaler`` + ``MLPClassifier`` pipeline the trainer fits, on examples replayed
   through the same feature code, for the naive baseline; start a real redis-server;
2. start two edges (``proxima edge serve``, rate limits raised so they never throttle) and
   the naive baseline (``bench/naive_edge.py``: Redis read per request, Python-loop
   candidates, scikit-learn ``predict_proba`` in the handler), all pinned to
   ``--server-core``; post the same events for ``--load-sessions`` sessions to each, so
   every request hits a warm session. No event arrives during the load, so the first edge,
   as configured, answers every repeated request from its rank cache (candidates and
   feature rows kept per window revision); the second runs with
   ``PROXIMA_RANK_CACHE_SESSIONS=1``, so every request generates candidates and computes
   features: the path of a session that has just had an event;
3. for each connection count, ``--repeats`` times, interleaved: wrk (one thread, pinned to
   ``--load-core``) against the first edge's bare ``GET /healthz`` (the HTTP floor of this
   stack), both edges' recommendations and the baseline's, the requests rotating over the
   sessions;
4. report requests/s, p50 and p99 (median and min-max across repeats), the product goals
   as ratios within each repeat (PASS/FAIL on the median), and each edge's own per-stage
   split from its ``/metrics`` histograms over the measured runs.

Redis is pinned to the load core, so the servers under test have their core to themselves.
The machine may be shared: each run also reports how much of either core other processes
took meanwhile. Everything started is stopped, and temporary files are removed, on the way
out.

Needs ``wrk`` (``apt-get install wrk``) and ``taskset`` (``apt-get install util-linux``),
and two cores.

    python bench/edge_latency.py                       # about 3 minutes
    python bench/edge_latency.py --duration 10 --repeats 3 --connections 1,16,64 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
from _common import (
    BenchError,
    CpuMeter,
    HttpServer,
    WrkResult,
    check_cores,
    histogram_quantile,
    http_get,
    http_post_json,
    median,
    pinned,
    require_binary,
    run_wrk,
    venv_script,
    write_paths_script,
)
from prometheus_client.parser import text_string_to_metric_families
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from central.datasets import read_log
from central.eventlog import EventLog, build_log
from central.trainer.examples import build_examples
from central.trainer.pipeline import TrainerConfig, train_bundle
from devtools.loggen import GeneratorConfig, generate_file
from edge_node.metrics import STAGES
from protocol.bundle import read_bundle
from protocol.candidates import CandidateConfig
from protocol.events import EVENT_TYPES
from protocol.keys import generate_keypair, load_public_key
from protocol.tables import CandidateTables
from protocol.window import WindowConfig

ROOT: Final = Path(__file__).resolve().parent.parent
NAIVE_SCRIPT: Final = Path(__file__).resolve().parent / "naive_edge.py"

TARGETS: Final = ("floor", "recs", "recs_miss", "naive")
TARGET_LABELS: Final = {
    "floor": "edge GET /healthz",
    "recs": "edge recs, rank cache hit",
    "recs_miss": "edge recs, rank cache missed",
    "naive": "naive recs",
}
EDGE_RECS: Final = ("recs", "recs_miss")
GOAL_RPS: Final = 4_000.0
GOAL_FLOOR_SHARE: Final = 0.25
GOAL_P99_GAP_MS: Final = 2.0
GOAL_NAIVE_RATIO: Final = 10.0

UNLIMITED: Final = str(10**9)
EDGE_ENV: Final = {
    "PROXIMA_IP_RATE": UNLIMITED,
    "PROXIMA_IP_BURST": UNLIMITED,
    "PROXIMA_SESSION_RATE": UNLIMITED,
    "PROXIMA_SESSION_BURST": UNLIMITED,
    "PROXIMA_LOG_LEVEL": "warning",
}
ONE_THREAD_ENV: Final = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
EVENTS_PER_POST: Final = 400
EXAMPLE_SESSIONS: Final = 250  # session runs replayed into the naive model's examples
WARMUP_S: Final = 2

Progress = Callable[[str], None]


# --- prepare -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    bundle: Path
    public_key: Path
    model: Path
    sessions: list[list[dict[str, Any]]]  # events to post, one list per session
    details: dict[str, Any]


def prepare(args: argparse.Namespace, directory: Path, say: Progress) -> Prepared:
    details: dict[str, Any] = {}
    rng = np.random.default_rng(args.seed)
    if args.bundle is not None:
        bundle_path, key_path = args.bundle.resolve(), args.public_key.resolve()
        tables, config, manifest = _open_bundle(bundle_path, key_path)
        log = random_walk_log(tables, args.log_sessions, rng)
        details["bundle_source"] = str(bundle_path)
        details["log"] = f"random walks over the bundle's co-visitation ({log.n_events:,} events)"
    else:
        log_path = directory / "log.csv"
        say(f"generating a shop log ({args.log_sessions:,} sessions, {args.items:,} items)")
        generate_file(
            log_path,
            GeneratorConfig(
                sessions=args.log_sessions,
                items=args.items,
                seed=args.seed,
            ),
        )
        log, _ = read_log(log_path, "csv")
        log_path.unlink()
        say(f"training a bundle on {log.n_events:,} events")
        private_pem, public_pem = generate_keypair()
        started = time.perf_counter()
        trained = train_bundle(
            log,
            TrainerConfig(max_positions=args.max_positions, seed=args.seed),
            version=1,
            private_key_pem=private_pem,
        )
        details["train_s"] = round(time.perf_counter() - started, 1)
        bundle_path, key_path = directory / "bench.bundle", directory / "bench.pub.pem"
        bundle_path.write_bytes(trained.bundle)
        key_path.write_bytes(public_pem)
        tables, config, manifest = _open_bundle(bundle_path, key_path)
        details["log"] = (
            f"synthetic shop log: {log.n_events:,} events, {len(log.session_ids):,} sessions"
        )
    details["items"] = tables.n_items
    details["ranker"] = str(manifest.ranker.get("precision"))
    window_config = WindowConfig(**config.get("window", {}))
    candidate_config = CandidateConfig(**config.get("candidates", {}))
    details["candidate_config"] = asdict(candidate_config)

    say("fitting the naive baseline's scikit-learn ranker")
    started = time.perf_counter()
    model, rows = fit_naive_model(log, tables, window_config, candidate_config, args.seed)
    details["naive_fit_s"] = round(time.perf_counter() - started, 1)
    details["naive_fit_rows"] = rows
    model_path = directory / "naive-model.joblib"
    joblib.dump(model, model_path)

    sessions = load_sessions(log, args.load_sessions, rng)
    details["load_sessions"] = len(sessions)
    details["events_per_session"] = round(sum(map(len, sessions)) / max(1, len(sessions)), 2)
    return Prepared(bundle_path, key_path, model_path, sessions, details)


def _open_bundle(bundle: Path, public_key: Path) -> tuple[CandidateTables, dict[str, Any], Any]:
    verified = read_bundle(bundle.read_bytes(), load_public_key(public_key.read_bytes()))
    return (
        CandidateTables.from_parts(verified.parts),
        dict(verified.manifest.config),
        verified.manifest,
    )


def random_walk_log(tables: CandidateTables, n_sessions: int, rng: np.random.Generator) -> EventLog:
    """Sessions of 3-10 views walking the bundle's co-visitation lists from popular items,
    for a ``--bundle`` whose training log is not at hand."""
    weights = tables.pop_recent.astype(np.float64) + 1.0
    starts = rng.choice(tables.n_items, size=n_sessions, p=weights / weights.sum())
    keys: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    categories: list[str | None] = []
    prices: list[float | None] = []
    now = int(time.time() * 1000)
    for s, start in enumerate(starts.tolist()):
        item = start
        seen: list[int] = []
        for j in range(int(rng.integers(3, 11))):
            seen.append(item)
            code = int(tables.category[item])
            price = float(tables.price[item])
            keys.append(f"walk-{s:06d}")
            items.append(tables.item_ids[item])
            stamps.append(now + j * 20_000)
            categories.append(tables.categories[code] if code >= 0 else None)
            prices.append(price if np.isfinite(price) else None)
            lo, hi = int(tables.covis_indptr[item]), int(tables.covis_indptr[item + 1])
            if rng.random() < 0.15 or hi == lo:
                item = seen[int(rng.integers(len(seen)))]
            else:
                item = int(tables.covis_indices[lo + int(rng.integers(min(hi - lo, 10)))])
    return build_log(keys, items, stamps, [0] * len(keys), categories, prices)


def fit_naive_model(
    log: EventLog,
    tables: CandidateTables,
    window_config: WindowConfig,
    candidate_config: CandidateConfig,
    seed: int,
) -> tuple[Pipeline, int]:
    """The trainer's pipeline (scaler + MLP with its settings), fitted on examples replayed
    through the same candidate and feature code. The bundle's tables have seen these
    sessions; that flatters the model's quality, which this benchmark does not measure."""
    trainer = TrainerConfig()
    rng = np.random.default_rng(seed)
    bounds = log.session_bounds()
    runs = np.flatnonzero(np.diff(bounds) >= 2).astype(np.int64)
    if runs.shape[0] > EXAMPLE_SESSIONS:
        runs = np.sort(rng.choice(runs, EXAMPLE_SESSIONS, replace=False))
    examples = build_examples(
        log,
        runs,
        tables,
        window_config=window_config,
        candidate_config=candidate_config,
        negatives=trainer.negatives,
        seed=seed,
    )
    if examples.labels.sum() == 0:
        raise BenchError("the replay gave no positive example for the naive model")
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=trainer.hidden_layers,
            alpha=trainer.alpha,
            early_stopping=True,
            max_iter=200,
            random_state=seed,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(examples.features, examples.labels)
    return model, int(examples.labels.shape[0])


def load_sessions(
    log: EventLog, count: int, rng: np.random.Generator, min_events: int = 3, max_events: int = 10
) -> list[list[dict[str, Any]]]:
    """``count`` sessions for the load, replaying the log's sessions of at least
    ``min_events`` events (their first ``max_events``), stamped in the last minutes."""
    bounds = log.session_bounds()
    lengths = np.diff(bounds)
    eligible = np.flatnonzero(lengths >= min_events)
    if eligible.shape[0] == 0:
        raise BenchError(f"the log has no session of {min_events} events or more")
    picked = rng.choice(eligible, count, replace=eligible.shape[0] < count)
    now = int(time.time() * 1000)
    sessions: list[list[dict[str, Any]]] = []
    for s, run in enumerate(picked.tolist()):
        start = int(bounds[run])
        stop = min(int(bounds[run + 1]), start + max_events)
        session_id = f"bench-{s:06d}"
        events: list[dict[str, Any]] = []
        for j, row in enumerate(range(start, stop)):
            event: dict[str, Any] = {
                "event_id": f"bench{s:06d}e{j:03d}",
                "session_id": session_id,
                "type": EVENT_TYPES[int(log.event_type[row])],
                "item_id": log.item_ids[int(log.item[row])],
                "ts": now - (stop - start - j) * 15_000,
            }
            category = int(log.category[row])
            if category >= 0:
                event["category"] = log.categories[category]
            price = float(log.price[row])
            if np.isfinite(price) and price > 0:
                event["price"] = round(price, 2)
            events.append(event)
        sessions.append(events)
    return sessions


# --- servers -------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This process's environment without PROXIMA_* settings, with one BLAS thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
    env.update(ONE_THREAD_ENV)
    return env


@dataclass(frozen=True, slots=True)
class Redis:
    url: str
    pid: int


@contextlib.contextmanager
def redis_server(core: int, workdir: Path) -> Iterator[Redis]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.servers import RedisServer

    class PinnedRedis(RedisServer):
        def _command(self) -> list[str]:
            return pinned(core, super()._command())

    server = PinnedRedis(workdir)
    server.start()
    try:
        assert server.pid is not None
        yield Redis(server.url, server.pid)
    finally:
        server.close()


def edge_server(
    prepared: Prepared, core: int, directory: Path, node: str, env: dict[str, str]
) -> HttpServer:
    proxima = venv_script("proxima")
    spool = directory / f"spool-{node}"

    def argv(port: int) -> list[str]:
        return pinned(
            core,
            [
                proxima,
                "edge",
                "serve",
                "--bundle",
                str(prepared.bundle),
                "--public-key",
                str(prepared.public_key),
                "--region",
                "bench",
                "--node",
                node,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--spool-dir",
                str(spool),
            ],
        )

    return HttpServer(
        f"edge {node}",
        argv,
        log_path=directory / f"{node}.log",
        env={**clean_env(), **EDGE_ENV, **env},
        ready_path="/readyz",
    )


def naive_server(prepared: Prepared, redis_url: str, core: int, directory: Path) -> HttpServer:
    def argv(port: int) -> list[str]:
        return pinned(
            core,
            [
                sys.executable,
                str(NAIVE_SCRIPT),
                "--bundle",
                str(prepared.bundle),
                "--public-key",
                str(prepared.public_key),
                "--model",
                str(prepared.model),
                "--redis",
                redis_url,
                "--port",
                str(port),
            ],
        )

    return HttpServer("naive baseline", argv, log_path=directory / "naive.log", env=clean_env())


def populate(server: HttpServer, sessions: Sequence[Sequence[dict[str, Any]]]) -> int:
    batch: list[dict[str, Any]] = []
    accepted = 0

    def send() -> int:
        status, body = http_post_json(server.base_url + "/v1/events", batch)
        if status != 202:
            raise BenchError(f"{server.name} refused events: {status} {body[:300]!r}")
        count: int = json.loads(body)["accepted"]
        batch.clear()
        return count

    for events in sessions:
        if len(batch) + len(events) > EVENTS_PER_POST:
            accepted += send()
        batch.extend(events)
    if batch:
        accepted += send()
    return accepted


def check_answers(server: HttpServer, paths: Sequence[str]) -> int:
    """Asks for a sample of the load's paths; returns how many answers were cold."""
    cold = 0
    for path in paths:
        status, body = http_get(server.base_url + path)
        if status != 200:
            raise BenchError(f"{server.name} answered {status} to {path}: {body[:300]!r}")
        answer = json.loads(body)
        cold += bool(answer.get("cold"))
        if not answer.get("items"):
            raise BenchError(f"{server.name} answered no items to {path}")
    return cold


# --- stage metrics -------------------------------------------------------------------------


StageHistograms = dict[str, dict[str, Any]]


def scrape_stages(server: HttpServer) -> StageHistograms:
    status, body = http_get(server.base_url + "/metrics")
    if status != 200:
        raise BenchError(f"edge /metrics answered {status}")
    stages: StageHistograms = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "proxima_edge_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if stage is None:
                continue
            entry = stages.setdefault(stage, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if sample.name.endswith("_bucket"):
                entry["buckets"][float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = sample.value
            elif sample.name.endswith("_count"):
                entry["count"] = sample.value
    return stages


def stage_split(before: StageHistograms, after: StageHistograms) -> list[dict[str, Any]]:
    rows = []
    for stage in STAGES:
        now = after.get(stage)
        if now is None:
            continue
        then = before.get(stage, {"buckets": {}, "sum": 0.0, "count": 0.0})
        count = now["count"] - then["count"]
        total = now["sum"] - then["sum"]
        buckets = sorted(
            (bound, value - then["buckets"].get(bound, 0.0))
            for bound, value in now["buckets"].items()
        )
        rows.append(
            {
                "stage": stage,
                "count": int(count),
                "first_bucket_us": buckets[0][0] * 1e6 if buckets else float("nan"),
                "mean_us": total / count * 1e6 if count else float("nan"),
                "p50_us": histogram_quantile(0.5, buckets) * 1e6,
                "p99_us": histogram_quantile(0.99, buckets) * 1e6,
            }
        )
    return rows


# --- measuring -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    wrk: WrkResult
    others_server_core: float  # share of the server core other processes took meanwhile
    others_load_core: float


Runs = dict[str, dict[int, list[Measured]]]  # target -> connections -> one per repeat


@dataclass(frozen=True, slots=True)
class Target:
    server: HttpServer
    script: Path | None
    path: str


def measure(
    targets: dict[str, Target],
    connections: Sequence[int],
    repeats: int,
    duration: int,
    meters: tuple[CpuMeter, CpuMeter],
    say: Progress,
) -> Runs:
    server_meter, load_meter = meters
    runs: Runs = {name: {c: [] for c in connections} for name in targets}
    for repeat in range(1, repeats + 1):
        for conns in connections:
            for name, target in targets.items():
                server_meter.start()
                load_meter.start()
                result = run_wrk(
                    target.server.base_url,
                    connections=conns,
                    duration_s=duration,
                    core=load_meter.core,
                    script=target.script,
                    path=target.path,
                )
                measured = Measured(result, server_meter.others(), load_meter.others())
                runs[name][conns].append(measured)
                errors = f"  ERRORS {result.errors}" if result.errors else ""
                say(
                    f"repeat {repeat}/{repeats}  c={conns:<3} {TARGET_LABELS[name]:<29} "
                    f"{result.requests_per_s:>9,.0f} req/s  p50 {result.p50_ms:.3f} ms  "
                    f"p99 {result.p99_ms:.3f} ms  others on cores "
                    f"{measured.others_server_core:.0%}/{measured.others_load_core:.0%}{errors}"
                )
    return runs


def summarise(values: Sequence[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values)}


def result_row(target: str, conns: int, measured: Sequence[Measured]) -> dict[str, Any]:
    results = [m.wrk for m in measured]
    return {
        "target": target,
        "connections": conns,
        "requests_per_s": summarise([r.requests_per_s for r in results]),
        "p50_ms": summarise([r.p50_ms for r in results]),
        "p99_ms": summarise([r.p99_ms for r in results]),
        "errors": sum(r.errors for r in results),
        "others_server_core": summarise([m.others_server_core for m in measured]),
        "others_load_core": summarise([m.others_load_core for m in measured]),
        "runs": [asdict(m) for m in measured],
    }


def goals(runs: Runs, connections: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for recs_target in EDGE_RECS:
        for conns in connections:
            floor, recs, naive = (
                [m.wrk for m in runs[t][conns]] for t in ("floor", recs_target, "naive")
            )
            checks: list[tuple[str, list[float], float, bool, str]] = [
                (
                    f"recs >= {GOAL_RPS:,.0f} req/s",
                    [r.requests_per_s for r in recs],
                    GOAL_RPS,
                    True,
                    "req/s",
                ),
                (
                    f"recs req/s >= {GOAL_FLOOR_SHARE:g} x floor's",
                    [r.requests_per_s / f.requests_per_s for r, f in zip(recs, floor, strict=True)],
                    GOAL_FLOOR_SHARE,
                    True,
                    "x",
                ),
                (
                    f"recs p99 - floor p99 <= {GOAL_P99_GAP_MS:g} ms",
                    [r.p99_ms - f.p99_ms for r, f in zip(recs, floor, strict=True)],
                    GOAL_P99_GAP_MS,
                    False,
                    "ms",
                ),
                (
                    f"recs req/s >= {GOAL_NAIVE_RATIO:g} x naive's",
                    [r.requests_per_s / n.requests_per_s for r, n in zip(recs, naive, strict=True)],
                    GOAL_NAIVE_RATIO,
                    True,
                    "x",
                ),
            ]
            for name, values, bound, at_least, unit in checks:
                spread = summarise(values)
                middle = spread["median"]
                rows.append(
                    {
                        "target": recs_target,
                        "goal": name,
                        "connections": conns,
                        "unit": unit,
                        **spread,
                        "passed": middle >= bound if at_least else middle <= bound,
                    }
                )
    return rows


# --- report --------------------------------------------------------------------------------


def _figure(value: float, unit: str) -> str:
    if unit == "req/s":
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:.3f}"


def _spread(values: dict[str, float], unit: str) -> str:
    return (
        f"{_figure(values['median'], unit)} "
        f"({_figure(values['min'], unit)}-{_figure(values['max'], unit)})"
    )


def _quantile(value: float, row: dict[str, Any]) -> str:
    first = row["first_bucket_us"]
    return f"<{first:.0f}" if value <= first else f"{value:.1f}"


def print_report(report: dict[str, Any]) -> None:
    settings = report["settings"]
    details = report["prepare"]
    trained = f", trained in {details['train_s']} s" if "train_s" in details else ""
    cold = report["cold_sample"]
    print(
        f"Edge answer under load: servers pinned to core {settings['server_core']}, "
        f"wrk -t1 (and redis) pinned to core {settings['load_core']}; "
        f"{settings['duration_s']} s per run, {settings['repeats']} repeats, interleaved; "
        f"{settings['cpus']} CPUs, load average "
        + " -> ".join(f"{v:.2f}" for v in settings["loadavg_1min"])
    )
    print(
        f"prepare: {details['log']}; {details['items']:,} items; "
        f"{details['ranker']} ranker{trained}"
    )
    print(
        f"         naive ranker: scaler + MLP fitted on {details['naive_fit_rows']:,} rows "
        f"in {details['naive_fit_s']} s"
    )
    print(
        f"load:    {details['load_sessions']:,} warm sessions "
        f"({details['events_per_session']} events each on average), k={settings['k']}; "
        f"cold answers in a sample of {cold['asked']}: "
        + ", ".join(f"{name} {count}" for name, count in cold.items() if name != "asked")
    )
    print("         'rank cache hit': the edge as configured; no event arrives during the load,")
    print("         so every request after a session's first finds its candidates and rows")
    print("         cached. 'rank cache missed': a second edge with PROXIMA_RANK_CACHE_SESSIONS=1,")
    print("         so every request generates candidates and computes features.")
    print()
    print("median (min-max) across repeats")
    header = (
        f"{'conns':>5}  {'target':<29} {'req/s':>24} {'p50 ms':>22} {'p99 ms':>22} "
        f"errors  {'others':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in report["results"]:
        others = f"{row['others_server_core']['max']:.0%}/{row['others_load_core']['max']:.0%}"
        print(
            f"{row['connections']:>5}  {TARGET_LABELS[row['target']]:<29} "
            f"{_spread(row['requests_per_s'], 'req/s'):>24} {_spread(row['p50_ms'], 'ms'):>22} "
            f"{_spread(row['p99_ms'], 'ms'):>22} {row['errors']:>6}  {others:>9}"
        )
    print(
        "others: the most of the server/load core that other processes took during a run "
        "(shared machine; high means disturbed)"
    )
    print()
    print("goals (ratios within each repeat; verdict on the median)")
    header = f"{'edge':<29} {'goal':<34} {'conns':>5} {'median (min-max)':>28}  verdict"
    print(header)
    print("-" * len(header))
    for row in report["goals"]:
        figure = _spread(row, row["unit"]) + " " + row["unit"]
        print(
            f"{TARGET_LABELS[row['target']]:<29} {row['goal']:<34} {row['connections']:>5} "
            f"{figure:>28}  {'PASS' if row['passed'] else 'FAIL'}"
        )
    for target, rows in report["stages"].items():
        print()
        print(
            f"{TARGET_LABELS[target]}: per-stage split over the measured runs "
            "(/metrics; p50/p99 interpolated in buckets)"
        )
        header = f"{'stage':<11} {'answers':>9} {'mean us':>9} {'~p50 us':>9} {'~p99 us':>9}"
        print(header)
        print("-" * len(header))
        for row in rows:
            print(
                f"{row['stage']:<11} {row['count']:>9,} {row['mean_us']:>9.1f} "
                f"{_quantile(row['p50_us'], row):>9} {_quantile(row['p99_us'], row):>9}"
            )
    print("(<N: within the histogram's first bucket, 0-N us)")


# --- main ----------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per target and concurrency")
    parser.add_argument("--connections", default="1,16", help="wrk connection counts")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--bundle", type=Path, help="serve this bundle instead of training one")
    parser.add_argument("--public-key", type=Path, help="public key the --bundle verifies with")
    parser.add_argument("--log-sessions", type=int, default=3_000, help="sessions in the log")
    parser.add_argument("--items", type=int, default=2_000, help="items in the generated log")
    parser.add_argument(
        "--max-positions",
        type=int,
        default=5_000,
        help="replayed positions the trainer uses for examples",
    )
    parser.add_argument(
        "--load-sessions", type=int, default=1_000, help="warm sessions the requests rotate over"
    )
    parser.add_argument("--k", type=int, default=20, help="items asked for per request")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        parser.error("--connections must be comma-separated whole numbers")
    if not args.connections or min(args.connections) < 1:
        parser.error("--connections needs at least one count, each at least 1")
    if (args.bundle is None) != (args.public_key is None):
        parser.error("--bundle and --public-key go together")
    if args.duration < 1 or args.repeats < 1 or args.load_sessions < 2:
        parser.error("--duration and --repeats must be at least 1, --load-sessions at least 2")
    if not 1 <= args.k <= 100:
        parser.error("--k must be 1-100")
    if args.server_core == args.load_core:
        parser.error("--server-core and --load-core must differ")
    return args


def run(args: argparse.Namespace, say: Progress) -> dict[str, Any]:
    require_binary("wrk")
    require_binary("taskset")
    check_cores(args.server_core, args.load_core)
    with (
        tempfile.TemporaryDirectory(prefix="proxima-edge-bench-") as name,
        contextlib.ExitStack() as stack,
    ):
        directory = Path(name)
        prepared = prepare(args, directory, say)
        say("starting redis-server, two edges and the naive baseline")
        redis = stack.enter_context(redis_server(args.load_core, directory / "redis"))
        core = args.server_core
        edge = stack.enter_context(edge_server(prepared, core, directory, "edge-1", {}))
        edge_miss = stack.enter_context(
            edge_server(
                prepared,
                core,
                directory,
                "edge-2",
                {"PROXIMA_RANK_CACHE_SESSIONS": "1"},
            )
        )
        naive = stack.enter_context(naive_server(prepared, redis.url, core, directory))
        servers = {"recs": edge, "recs_miss": edge_miss, "naive": naive}

        say(f"posting events for {len(prepared.sessions):,} sessions to each server")
        total = sum(map(len, prepared.sessions))
        for server in servers.values():
            accepted = populate(server, prepared.sessions)
            if accepted != total:
                raise BenchError(f"{server.name} accepted {accepted} of {total} events")
        paths = [
            f"/v1/recommendations?session_id={events[0]['session_id']}&k={args.k}"
            for events in prepared.sessions
        ]
        sample = paths[:: max(1, len(paths) // 50)]
        cold: dict[str, int] = {"asked": len(sample)}
        for target, server in servers.items():
            cold[TARGET_LABELS[target]] = check_answers(server, sample)
        script = write_paths_script(directory / "paths.lua", paths)
        targets = {
            "floor": Target(edge, None, "/healthz"),
            "recs": Target(edge, script, "/"),
            "recs_miss": Target(edge_miss, script, "/"),
            "naive": Target(naive, script, "/"),
        }
        say("warming up")
        for warm in targets.values():
            run_wrk(
                warm.server.base_url,
                connections=max(args.connections),
                duration_s=WARMUP_S,
                core=args.load_core,
                script=warm.script,
                path=warm.path,
            )
        before = {t: scrape_stages(servers[t]) for t in EDGE_RECS}
        server_pids = [pid for pid in (edge.pid, edge_miss.pid, naive.pid) if pid is not None]
        meters = (
            CpuMeter(core, server_pids),
            CpuMeter(args.load_core, [redis.pid], with_children=True),
        )
        load_before = os.getloadavg()[0]
        runs = measure(targets, args.connections, args.repeats, args.duration, meters, say)
        load_after = os.getloadavg()[0]
        stages = {t: stage_split(before[t], scrape_stages(servers[t])) for t in EDGE_RECS}
    results = [
        result_row(target, conns, runs[target][conns])
        for conns in args.connections
        for target in TARGETS
    ]
    return {
        "settings": {
            "duration_s": args.duration,
            "repeats": args.repeats,
            "connections": args.connections,
            "k": args.k,
            "server_core": args.server_core,
            "load_core": args.load_core,
            "cpus": os.cpu_count(),
            "loadavg_1min": [load_before, load_after],
        },
        "prepare": prepared.details,
        "cold_sample": cold,
        "results": results,
        "goals": goals(runs, args.connections),
        "stages": stages,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    try:
        report = run(args, say)
    except BenchError as exc:
        print(f"edge_latency: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
