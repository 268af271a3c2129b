"""The event pipeline and the bundle rollout, end to end, against the goals.

One run measures three things and prints each goal with PASS or FAIL:

1. **edge → JetStream**: events per second that ONE edge core accepts over HTTP and delivers
   to the ``EVENTS`` stream. ``proxima edge serve --nats`` runs pinned to ``--server-core``
   (``taskset``); nats-server and this process, which posts pre-encoded JSON batches of
   100-500 events over ``--connections`` concurrent connections, are pinned to
   ``--load-core``. The clock runs from the first POST until the stream holds every event
   (goal: >= 20,000/s). Rate limits are lifted; events come from many sessions.
2. **bridge → Kafka**: events per second through :class:`central.bridge.Bridge` from a
   JetStream backlog of ``--bridge-events`` into a Tansu Kafka topic, timed from the end of
   the bridge's start until Kafka has acknowledged them all, then read back and counted
   (goal: >= 20,000/s). This reuses ``bench/pipeline_bridge.py``; the bridge runs in this
   process, unpinned, with the ``proxima central bridge`` defaults (batch 500, one batch in
   flight), idempotence off (Tansu has none).
3. **bundle propagation**: a bundle of a few MB (trained on a generated shop log of about
   ``--log-events`` events) is published under a new version and promoted in two regions
   (``runtime.registry``), ``--rollouts`` times; the clock runs from the KV update
   until both edges (``proxima edge serve --nats``, regions eu and us) answer ``/v1/model``
   with the new version, polled every few milliseconds (goal: p99 <= 1 s).

Everything (servers, edges, temporary files) is started and removed by the script, also on
Ctrl-C. Needs ``taskset`` (util-linux) and two cores; the machine may be shared, so the
load average and how much of the server core other processes took are printed too.

    python bench/pipeline.py                       # about a minute on 2 cores
    python bench/pipeline.py --parts edge bridge --edge-events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import nats
from _common import BenchError, CpuMeter, HttpServer, check_cores, pinned, venv_script
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pipeline_bridge import bridge_run, prepublish
from pipeline_publish import process_cpu_seconds

from central.datasets import read_log
from central.trainer.pipeline import TrainerConfig, train_bundle
from devtools.localservers import KafkaBroker, NatsServer
from devtools.loggen import GeneratorConfig, generate_file
from protocol.bundle import build_bundle, read_bundle
from protocol.keys import generate_keypair, load_private_key
from protocol.subjects import EVENTS_STREAM
from runtime.registry import ModelRegistry

PARTS: Final = ("edge", "bridge", "rollout")
GOAL_EDGE_EVENTS_PER_S: Final = 20_000.0
GOAL_BRIDGE_EVENTS_PER_S: Final = 20_000.0
GOAL_PROPAGATION_P99_S: Final = 1.0
ROLLOUT_REGIONS: Final = ("eu", "us")
BATCH_SIZES: Final = (100, 500)  # events per POST, uniformly between these
EVENTS_PER_SESSION: Final = 5
WARMUP_EVENTS: Final = 5_000
STREAM_POLL_S: Final = 0.005
MODEL_POLL_S: Final = 0.002
SETTLE_BEFORE_PROMOTION_S: Final = 0.3
DEADLINE_S: Final = 300.0
BRIDGE_BATCH: Final = 500  # `proxima central bridge` defaults
BRIDGE_DEPTH: Final = 1
BRIDGE_PARTITIONS: Final = 6

UNLIMITED: Final = str(10**9)
EDGE_ENV: Final = {
    "PROXIMA_IP_RATE": UNLIMITED,
    "PROXIMA_IP_BURST": UNLIMITED,
    "PROXIMA_SESSION_RATE": UNLIMITED,
    "PROXIMA_SESSION_BURST": UNLIMITED,
    "PROXIMA_LOG_LEVEL": "warning",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

Say = Callable[[str], None]


# --- keys and the bundle ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    bundle: bytes  # version 1
    bundle_path: Path
    public_key: Path
    private_pem: bytes
    log_events: int
    train_s: float

    def as_version(self, version: int) -> bytes:
        """The same parts and manifest under another version, signed anew (no retraining)."""
        private_key = load_private_key(self.private_pem)
        bundle = read_bundle(self.bundle, private_key.public_key())
        manifest = bundle.manifest
        return build_bundle(
            version=version,
            feature_schema_version=manifest.feature_schema_version,
            ranker=manifest.ranker,
            metrics=manifest.metrics,
            rules_version=manifest.rules_version,
            config=manifest.config,
            training=manifest.training,
            parts=dict(bundle.parts),
            private_key=private_key,
        )


def train_signed_bundle(directory: Path, log_events: int, say: Say) -> Signed:
    """Generates a shop log of about ``log_events`` events and trains bundle version 1."""
    private_pem, public_pem = generate_keypair()
    public_key = directory / "signing.pub"
    public_key.write_bytes(public_pem)
    log_path = directory / "shop.csv"
    sessions = max(100, round(log_events / 6.5))  # the generator's mean session length
    generate_file(log_path, GeneratorConfig(sessions=sessions, items=60_000, seed=0))
    log, _ = read_log(log_path, "csv")
    log_path.unlink()
    say(f"training a bundle on {log.n_events:,} generated events")
    started = time.perf_counter()
    result = train_bundle(
        log, TrainerConfig(folds=3, max_positions=10_000), version=1, private_key_pem=private_pem
    )
    train_s = time.perf_counter() - started
    bundle_path = directory / "bundle-1.bundle"
    bundle_path.write_bytes(result.bundle)
    return Signed(result.bundle, bundle_path, public_key, private_pem, log.n_events, train_s)


# --- servers ------------------------------------------------------------------------------------


class PinnedNatsServer(NatsServer):
    def __init__(self, workdir: Path, core: int | None) -> None:
        self.core = core
        super().__init__(workdir)

    def _command(self) -> list[str]:
        command = super()._command()
        return pinned(self.core, command) if self.core is not None else command


def edge_process(
    signed: Signed, nats_url: str, directory: Path, *, region: str, node: str, core: int | None,
    settings: dict[str, str] | None = None,
) -> HttpServer:  # fmt: skip
    proxima = venv_script("proxima")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
    env.update(EDGE_ENV)
    env.update(settings or {})
    env["PROXIMA_BUNDLE_CACHE_DIR"] = str(directory / f"bundle-cache-{node}")

    def argv(port: int) -> list[str]:
        command = [
            proxima, "edge", "serve", "--bundle", str(signed.bundle_path),
            "--public-key", str(signed.public_key), "--region", region, "--node", node,
            "--nats", nats_url, "--host", "127.0.0.1", "--port", str(port),
            "--spool-dir", str(directory / f"spool-{node}"),
        ]  # fmt: skip
        return pinned(core, command) if core is not None else command

    return HttpServer(
        f"edge {node}", argv, log_path=directory / f"edge-{node}.log", env=env,
        ready_path="/readyz",
    )  # fmt: skip


@contextlib.contextmanager
def pinned_to(core: int | None) -> Iterator[None]:
    """Runs this process (and the threads it starts meanwhile) on ``core``."""
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def stream_messages(js: JetStreamContext) -> int:
    try:
        return (await js.stream_info(EVENTS_STREAM)).state.messages
    except NotFoundError:
        return 0


# --- 1. one edge core: HTTP → spool → JetStream -----------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeRun:
    events: int
    posts: int
    accepted_s: float  # first POST until every POST was answered 202
    delivered_s: float  # first POST until the stream holds every event
    edge_cpu_s: float
    load_cpu_s: float
    others_on_server_core: float

    @property
    def delivered_per_s(self) -> float:
        return self.events / self.delivered_s

    @property
    def accepted_per_s(self) -> float:
        return self.events / self.accepted_s


def json_batches(events: int, rng: random.Random) -> list[bytes]:
    """Pre-encoded JSON bodies of 100-500 events from many sessions; ids unique per call."""
    run = uuid.uuid4().hex[:12]
    sessions = max(1, events // EVENTS_PER_SESSION)
    bodies, start = [], 0
    while start < events:
        size = min(events - start, rng.randint(*BATCH_SIZES))
        batch = [
            {
                "event_id": f"{run}-{n:08d}",
                "session_id": f"{run}-s{n % sessions:07d}",
                "user_id": f"user-{n % sessions % 4999:05d}",
                "type": "view" if n % 5 else "click",
                "item_id": f"item-{rng.randrange(60_000):05d}",
                "ts": 1_732_000_000_000 + n,
                "category": f"cat-{n % 50}",
                "price": 19.99,
                "context": {"page": "/p/item", "device": "mobile", "locale": "de-DE"},
            }
            for n in range(start, start + size)
        ]
        bodies.append(json.dumps(batch, separators=(",", ":")).encode())
        start += size
    return bodies


async def post_all(url: str, bodies: Sequence[bytes], connections: int) -> None:
    """Posts every body over ``connections`` keep-alive connections; 202 or the bench fails."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def poster() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as http:
            while not queue.empty():
                body = queue.get_nowait()
                response = await http.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
                if response.status_code != 202:
                    raise BenchError(f"POST /v1/events: {response.status_code} {response.text}")
                if response.json()["rejected"]:
                    raise BenchError(f"events rejected: {response.text[:500]}")

    await asyncio.gather(*(poster() for _ in range(connections)))


async def wait_for_stream(js: JetStreamContext, messages: int) -> None:
    deadline = time.perf_counter() + DEADLINE_S
    while await stream_messages(js) < messages:
        if time.perf_counter() > deadline:
            raise BenchError(f"the stream never reached {messages} messages")
        await asyncio.sleep(STREAM_POLL_S)


async def edge_run(
    edge: HttpServer, js: JetStreamContext, events: int, connections: int, server_core: int,
    rng: random.Random,
) -> EdgeRun:  # fmt: skip
    bodies = json_batches(events, rng)
    stored_before = await stream_messages(js)
    assert edge.pid is not None
    meter = CpuMeter(server_core, [edge.pid])
    meter.start()
    edge_cpu_before = process_cpu_seconds(edge.pid)
    load_cpu_before = time.process_time()
    started = time.perf_counter()
    await post_all(edge.base_url, bodies, connections)
    accepted_s = time.perf_counter() - started
    await wait_for_stream(js, stored_before + events)
    delivered_s = time.perf_counter() - started
    return EdgeRun(
        events, len(bodies), accepted_s, delivered_s,
        process_cpu_seconds(edge.pid) - edge_cpu_before,
        time.process_time() - load_cpu_before, meter.others(),
    )  # fmt: skip


async def measure_edge(
    edge: HttpServer, nats_url: str, args: argparse.Namespace, say: Say
) -> list[EdgeRun]:
    connection = await nats.connect(nats_url)
    rng = random.Random(args.seed)
    try:
        js = connection.jetstream()
        await edge_run(edge, js, WARMUP_EVENTS, args.connections, args.server_core, rng)
        runs = []
        for repeat in range(args.repeats):
            run = await edge_run(
                edge, js, args.edge_events, args.connections, args.server_core, rng
            )
            say(
                f"  run {repeat + 1}: {run.delivered_per_s:>7,.0f} events/s delivered to "
                f"JetStream ({run.events:,} events in {run.posts} POSTs, "
                f"{run.delivered_s:.2f} s; all accepted over HTTP after {run.accepted_s:.2f} s "
                f"= {run.accepted_per_s:,.0f}/s); edge CPU {run.edge_cpu_s / run.delivered_s:.0%}"
                f" of its core, {run.edge_cpu_s / run.events * 1e6:.0f} µs/event; poster CPU "
                f"{run.load_cpu_s / run.delivered_s:.0%}; others on the edge core "
                f"{run.others_on_server_core:.0%}"
            )
            runs.append(run)
        return runs
    finally:
        await connection.close()


def run_edge_part(signed: Signed, directory: Path, args: argparse.Namespace, say: Say) -> float:
    say(
        f"\n1. one edge core, HTTP → JetStream: {args.repeats} runs of "
        f"{args.edge_events:,} events, "
        f"JSON batches of {BATCH_SIZES[0]}-{BATCH_SIZES[1]}, {args.connections} connections; "
        f"edge on core {args.server_core}, nats-server and posters on core {args.load_core}"
    )
    publish_settings = {}
    if args.publish_batch is not None:
        publish_settings["PROXIMA_PUBLISH_BATCH"] = str(args.publish_batch)
    with (
        PinnedNatsServer(directory / "nats-edge", args.load_core) as server,
        edge_process(
            signed,
            server.url,
            directory,
            region="bench",
            node="edge-0",
            core=args.server_core,
            settings=publish_settings,
        ) as edge,
        pinned_to(args.load_core),
    ):
        runs = asyncio.run(measure_edge(edge, server.url, args, say))
    return statistics.median(run.delivered_per_s for run in runs)


# --- 2. the bridge: JetStream → Kafka ----------------------------------------------------------


def run_bridge_part(directory: Path, args: argparse.Namespace, say: Say) -> float:
    say(
        f"\n2. bridge, JetStream → Kafka: backlog of {args.bridge_events:,} events, "
        f"{args.repeats} runs (batch {BRIDGE_BATCH}, depth {BRIDGE_DEPTH}, "
        f"{BRIDGE_PARTITIONS} partitions), each with a fresh consumer and topic"
    )

    async def measure(nats_url: str, bootstrap: str) -> list[float]:
        publish_rate, size = await prepublish(nats_url, args.bridge_events)
        say(
            f"  pre-filled the stream with {args.bridge_events:,} events of ~{size} B "
            f"({publish_rate:,.0f}/s from one publisher)"
        )
        rates = []
        for repeat in range(args.repeats):
            run = await bridge_run(
                nats_url, bootstrap, args.bridge_events, (BRIDGE_BATCH, BRIDGE_DEPTH), repeat,
                BRIDGE_PARTITIONS,
            )  # fmt: skip
            exact = run.records_in_kafka == run.distinct_in_kafka == args.bridge_events
            events_per_s = run.events_per_s(args.bridge_events)
            with_setup = args.bridge_events / (run.seconds + run.setup_seconds)
            say(
                f"  run {repeat + 1}: {events_per_s:>7,.0f} events/s ({run.seconds:.2f} s; "
                f"{with_setup:,.0f}/s counting the {run.setup_seconds:.2f} s start); "
                f"{run.cpu_seconds / args.bridge_events * 1e6:.1f} µs CPU/event; Kafka holds "
                f"{run.records_in_kafka:,} records, {run.distinct_in_kafka:,} distinct"
                f"{'' if exact else '  COUNT MISMATCH'}; {run.errors} errors"
            )
            if not exact:
                raise BenchError("the topic does not hold every event exactly once")
            rates.append(events_per_s)
        return rates

    with (
        NatsServer(directory / "nats-bridge") as server,
        KafkaBroker(directory / "kafka") as broker,
    ):
        rates = asyncio.run(measure(server.url, broker.bootstrap))
    return statistics.median(rates)


# --- 3. bundle propagation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rollout:
    version: int
    promote_s: float  # ModelRegistry.promote_regions (KV read + compare-and-set per region)
    answered_s: dict[str, float]  # per region: until its edge answered with the version
    swapped_s: dict[str, float]  # per region: until its edge's loaded_at (edge clock)

    @property
    def everywhere_s(self) -> float:
        return max(self.answered_s.values())


async def until_answered(
    http: httpx.AsyncClient, edge: HttpServer, version: int, started: float
) -> tuple[float, float]:
    """Seconds from ``started`` until ``/v1/model`` names ``version``; and its loaded_at."""
    deadline = started + DEADLINE_S
    while True:
        info = (await http.get(f"{edge.base_url}/v1/model")).json()
        bundle = info.get("bundle") or {}
        if bundle.get("version") == version:
            return time.perf_counter() - started, float(bundle["loaded_at"])
        if time.perf_counter() > deadline:
            raise BenchError(f"{edge.name} never served version {version}: {info}")
        await asyncio.sleep(MODEL_POLL_S)


async def follow_the_bus(
    js: JetStreamContext, http: httpx.AsyncClient, signed: Signed, edges: dict[str, HttpServer]
) -> None:
    """Rolls out the version the edges already serve, as a fleet in service has one, and waits
    until every edge has read it: the buckets exist and the watches are live before timing."""
    registry = ModelRegistry(js)
    await registry.publish_bundle(signed.bundle, 1)
    await registry.promote_regions(1, list(edges))
    deadline = time.perf_counter() + DEADLINE_S
    for edge in edges.values():
        while True:
            info = (await http.get(f"{edge.base_url}/v1/model")).json()
            rollout = (info.get("rollout") or {}).get("state") or {}
            if rollout.get("stable") == 1 and not info["stale"]:
                break
            if time.perf_counter() > deadline:
                raise BenchError(f"{edge.name} never read the rollout: {info}")
            await asyncio.sleep(0.05)


async def measure_rollouts(
    signed: Signed, nats_url: str, edges: dict[str, HttpServer], rollouts: int, say: Say
) -> list[Rollout]:
    connection = await nats.connect(nats_url)
    results = []
    try:
        js = connection.jetstream()
        async with httpx.AsyncClient(timeout=10.0) as http:
            await follow_the_bus(js, http, signed, edges)
            for version in range(2, rollouts + 2):
                data = await asyncio.to_thread(signed.as_version, version)
                await ModelRegistry(js).publish_bundle(data, version)
                await asyncio.sleep(SETTLE_BEFORE_PROMOTION_S)
                started, started_wall = time.perf_counter(), time.time()
                await ModelRegistry(js).promote_regions(version, list(edges))
                promote_s = time.perf_counter() - started
                regions = list(edges)
                seen = await asyncio.gather(
                    *(until_answered(http, edges[region], version, started) for region in regions)
                )
                answers = dict(zip(regions, seen, strict=True))
                rollout = Rollout(
                    version,
                    promote_s,
                    answered_s={region: answered for region, (answered, _) in answers.items()},
                    swapped_s={
                        region: loaded_at - started_wall
                        for region, (_, loaded_at) in answers.items()
                    },
                )
                say(
                    f"  version {version}: both edges answer after "
                    f"{rollout.everywhere_s * 1000:4.0f} ms ("
                    + ", ".join(
                        f"{r} {rollout.answered_s[r] * 1000:.0f} ms, swapped at "
                        f"{rollout.swapped_s[r] * 1000:.0f} ms"
                        for r in regions
                    )
                    + f"; the KV update took {promote_s * 1000:.0f} ms)"
                )
                results.append(rollout)
    finally:
        await connection.close()
    return results


def run_rollout_part(
    signed: Signed, directory: Path, args: argparse.Namespace, say: Say
) -> tuple[float, float]:
    say(
        f"\n3. bundle propagation: a {len(signed.bundle) / 1e6:.1f} MB bundle, "
        f"{args.rollouts} rollouts to {len(ROLLOUT_REGIONS)} edges "
        f"({', '.join(ROLLOUT_REGIONS)}), /v1/model polled every {MODEL_POLL_S * 1000:.0f} ms"
    )
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(NatsServer(directory / "nats-rollout"))
        edges = {
            region: stack.enter_context(
                edge_process(
                    signed, server.url, directory, region=region, node=f"{region}-1", core=None
                )
            )
            for region in ROLLOUT_REGIONS
        }
        rollouts = asyncio.run(measure_rollouts(signed, server.url, edges, args.rollouts, say))
    times = [rollout.everywhere_s for rollout in rollouts]
    return percentile(times, 0.50), percentile(times, 0.99)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: with fewer than 100 values, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- main ---------------------------------------------------------------------------------------


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--edge-events", type=int, default=60_000, help="events per edge run")
    parser.add_argument("--connections", type=int, default=8, help="concurrent posters")
    parser.add_argument(
        "--publish-batch", type=int, default=None,
        help="the edge's publish_batch (events in flight to JetStream; default: the edge's)",
    )  # fmt: skip
    parser.add_argument("--bridge-events", type=int, default=60_000, help="JetStream backlog")
    parser.add_argument("--repeats", type=int, default=3, help="runs of parts 1 and 2")
    parser.add_argument("--rollouts", type=int, default=10, help="promotions timed in part 3")
    parser.add_argument("--log-events", type=int, default=300_000, help="training log size")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.bridge_events < 50_000 and "bridge" in args.parts:
        parser.error("--bridge-events: at least 50000")
    if min(args.edge_events, args.repeats, args.rollouts, args.connections) < 1:
        parser.error("--edge-events, --repeats, --rollouts and --connections must be positive")
    if args.rollouts < 5:
        parser.error("--rollouts: at least 5, for a p99 worth the name")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING)

    def say(message: str) -> None:
        print(message, flush=True)

    try:
        if "edge" in args.parts:
            check_cores(args.server_core, args.load_core)
        say("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        goals: list[tuple[str, str, str, bool]] = []
        with tempfile.TemporaryDirectory(prefix="proxima-bench-pipeline-") as workdir:
            directory = Path(workdir)
            signed = None
            if "edge" in args.parts or "rollout" in args.parts:
                say(f"generating a shop log of ~{args.log_events:,} events")
                signed = train_signed_bundle(directory, args.log_events, say)
                say(
                    f"bundle: {len(signed.bundle) / 1e6:.1f} MB from {signed.log_events:,} "
                    f"events, trained in {signed.train_s:.0f} s"
                )
            if "edge" in args.parts:
                assert signed is not None
                rate = run_edge_part(signed, directory, args, say)
                goals.append((
                    "one edge core, HTTP → JetStream (median)", f"{rate:,.0f} events/s",
                    f">= {GOAL_EDGE_EVENTS_PER_S:,.0f}/s", rate >= GOAL_EDGE_EVENTS_PER_S,
                ))  # fmt: skip
            if "bridge" in args.parts:
                rate = run_bridge_part(directory, args, say)
                goals.append((
                    "bridge, JetStream → Kafka (median)", f"{rate:,.0f} events/s",
                    f">= {GOAL_BRIDGE_EVENTS_PER_S:,.0f}/s", rate >= GOAL_BRIDGE_EVENTS_PER_S,
                ))  # fmt: skip
            if "rollout" in args.parts:
                assert signed is not None
                p50, p99 = run_rollout_part(signed, directory, args, say)
                goals.append((
                    f"bundle on 2 edges after the KV update, p99 (p50 {p50 * 1000:.0f} ms)",
                    f"{p99 * 1000:,.0f} ms", f"<= {GOAL_PROPAGATION_P99_S * 1000:,.0f} ms",
                    p99 <= GOAL_PROPAGATION_P99_S,
                ))  # fmt: skip
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    say("\ngoals:")
    width = max(len(name) for name, *_ in goals)
    for name, measured, goal, passed in goals:
        say(f"  {name:<{width}}  {measured:>16}  goal {goal:<12} {verdict(passed)}")
    return 0 if all(passed for *_, passed in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
