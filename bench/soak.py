"""Soak: one edge under steady load for minutes while sessions churn.

The edge runs as ``proxima-edge serve`` in its own process with a small session byte
limit, so the churn reaches the limit early and the rest of the run shows whether memory
stays put. A fixed number of clients loop over fresh sessions (post a few views, ask for
recommendations, again, then a new session); every interval prints the edge's RSS against
the baseline and the configured bound, the session bytes it counts, and the p50/p99 of
recommendation answers in that interval. The comparison is within the run: RSS growth over
the bound, and the last interval's p99 over the first's. The last line is one JSON object.

    python bench/soak.py --duration 90
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from _common import HttpServer, venv_script

from central.datasets import read_log
from central.trainer.pipeline import TrainerConfig, train_bundle
from devtools.loggen import GeneratorConfig, generate_file
from protocol.keys import generate_keypair

UNLIMITED: Final = str(10**9)
EDGE_ENV: Final = {
    "PROXIMA_IP_RATE": UNLIMITED,
    "PROXIMA_IP_BURST": UNLIMITED,
    "PROXIMA_SESSION_RATE": UNLIMITED,
    "PROXIMA_SESSION_BURST": UNLIMITED,
    "PROXIMA_LOG_LEVEL": "warning",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
ROUNDS_PER_SESSION: Final = 4
EVENTS_PER_ROUND: Final = 5


@dataclass
class Interval:
    latencies_s: list[float] = field(default_factory=list)
    events: int = 0
    errors: int = 0


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def gauge(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def prepare_bundle(directory: Path, seed: int) -> tuple[Path, Path, list[str]]:
    log_path = directory / "log.csv"
    generate_file(
        log_path, GeneratorConfig(sessions=2_000, items=2_000, categories=20, seed=seed, days=10)
    )
    log, _ = read_log(log_path, "csv")
    private_pem, public_pem = generate_keypair()
    trained = train_bundle(
        log,
        TrainerConfig(folds=3, max_positions=5_000, max_validation_positions=500, seed=seed),
        version=1,
        private_key_pem=private_pem,
    )
    bundle, key = directory / "soak.bundle", directory / "soak.pub.pem"
    bundle.write_bytes(trained.bundle)
    key.write_bytes(public_pem)
    items = sorted({str(item) for item in log.item_ids})
    return bundle, key, items


async def client_loop(
    client: httpx.AsyncClient,
    base: str,
    items: Sequence[str],
    rng: random.Random,
    stop: asyncio.Event,
    current: list[Interval],
) -> None:
    while not stop.is_set():
        session_id = f"soak-{uuid.uuid4().hex}"  # a fresh session: the churn
        for _ in range(ROUNDS_PER_SESSION):
            now_ms = int(time.time() * 1000)
            batch = [
                {
                    "event_id": uuid.uuid4().hex,
                    "session_id": session_id,
                    "type": "view",
                    "item_id": rng.choice(items),
                    "category": f"c{rng.randrange(20)}",
                    "price": round(rng.uniform(1, 200), 2),
                    "ts": now_ms + n,
                }
                for n in range(EVENTS_PER_ROUND)
            ]
            interval = current[0]
            try:
                posted = await client.post(f"{base}/v1/events", json=batch)
                if posted.status_code != 202:
                    interval.errors += 1
                interval.events += len(batch)
                started = time.perf_counter()
                answer = await client.get(
                    f"{base}/v1/recommendations", params={"session_id": session_id}
                )
                elapsed = time.perf_counter() - started
            except httpx.HTTPError:
                current[0].errors += 1
                continue
            if answer.status_code == 200:
                current[0].latencies_s.append(elapsed)
            else:
                current[0].errors += 1
            if stop.is_set():
                return


async def soak(args: argparse.Namespace, edge: HttpServer, items: list[str]) -> dict[str, Any]:
    assert edge.pid is not None
    pid = edge.pid
    base = edge.base_url
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        baseline_rss = rss_bytes(pid)
        current = [Interval()]
        stop = asyncio.Event()
        rng = random.Random(args.seed)
        workers = [
            asyncio.create_task(
                client_loop(client, base, items, random.Random(rng.random()), stop, current)
            )
            for _ in range(args.clients)
        ]
        rows: list[dict[str, Any]] = []
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.duration:
                await asyncio.sleep(args.interval)
                done, current[0] = current[0], Interval()
                text = (await client.get(f"{base}/metrics")).text
                row = {
                    "t_s": round(time.monotonic() - started),
                    "answers": len(done.latencies_s),
                    "events": done.events,
                    "errors": done.errors,
                    "p50_ms": round(quantile(done.latencies_s, 0.50) * 1000, 3),
                    "p99_ms": round(quantile(done.latencies_s, 0.99) * 1000, 3),
                    "rss_mib": round(rss_bytes(pid) / 2**20, 1),
                    "session_mib": round(gauge(text, "proxima_edge_session_bytes") / 2**20, 1),
                    "sessions": int(gauge(text, "proxima_edge_sessions")),
                    "evictions": int(gauge(text, "proxima_edge_session_evictions")),
                }
                rows.append(row)
                print(
                    f"t={row['t_s']:>4}s answers={row['answers']:>6} p50={row['p50_ms']:.2f}ms "
                    f"p99={row['p99_ms']:.2f}ms rss={row['rss_mib']}MiB "
                    f"sessions={row['sessions']} ({row['session_mib']}MiB counted) "
                    f"evicted={row['evictions']} errors={row['errors']}",
                    flush=True,
                )
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
    bound = args.sessions_max_bytes
    rss_max = max(r["rss_mib"] for r in rows) * 2**20
    # After the first interval the limit is usually reached; compare the steady part.
    steady = rows[1:] or rows
    return {
        "bench": "soak",
        "duration_s": args.duration,
        "interval_s": args.interval,
        "clients": args.clients,
        "sessions_max_bytes": bound,
        "baseline_rss_mib": round(baseline_rss / 2**20, 1),
        "rss_first_mib": rows[0]["rss_mib"],
        "rss_last_mib": rows[-1]["rss_mib"],
        "rss_max_mib": round(rss_max / 2**20, 1),
        "rss_growth_over_bound": round((rss_max - baseline_rss) / bound, 3),
        "rss_last_over_second": round(rows[-1]["rss_mib"] / steady[0]["rss_mib"], 3),
        "p99_first_ms": rows[0]["p99_ms"],
        "p99_last_ms": rows[-1]["p99_ms"],
        "p99_last_over_first": round(rows[-1]["p99_ms"] / rows[0]["p99_ms"], 3),
        "p99_max_over_median": round(
            max(r["p99_ms"] for r in steady) / quantile([r["p99_ms"] for r in steady], 0.5), 3
        ),
        "answers": sum(r["answers"] for r in rows),
        "events": sum(r["events"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "session_mib_last": rows[-1]["session_mib"],
        "evictions": rows[-1]["evictions"],
        "intervals": rows,
    }


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per report line")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument(
        "--sessions-max-bytes",
        type=int,
        default=8 << 20,
        help="the edge's session byte limit (small, so churn reaches it early)",
    )
    parser.add_argument(
        "--rank-cache-sessions",
        type=int,
        default=256,
        help="the edge's rank cache (small, so it is full early too)",
    )
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if not (args.duration > 0 and args.interval > 0 and args.clients > 0):
        parser.error("--duration, --interval and --clients must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="proxima-soak-") as name:
        directory = Path(name)
        print("training a small bundle", file=sys.stderr, flush=True)
        bundle, key, items = prepare_bundle(directory, args.seed)
        edge_bin = venv_script("proxima-edge")

        def argv_for(port: int) -> list[str]:
            return [
                edge_bin,
                "serve",
                "--bundle", str(bundle),
                "--public-key", str(key),
                "--region", "soak",
                "--node", "n1",
                "--host", "127.0.0.1",
                "--port", str(port),
                "--spool-dir", str(directory / "spool"),
                "--spool-fsync", "never",
                "--sessions-max-bytes", str(args.sessions_max_bytes),
                "--rank-cache-sessions", str(args.rank_cache_sessions),
            ]  # fmt: skip

        with HttpServer(
            "edge",
            argv_for,
            log_path=directory / "edge.log",
            env={**clean_env(), **EDGE_ENV},
            ready_path="/readyz",
        ) as edge:
            report = asyncio.run(soak(args, edge, items))
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
