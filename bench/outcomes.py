"""Business outcomes, proven on a simulated shop: does the measured lift cover the true one,
and does off-policy evaluation rank two bundles as their true quality does?

The shop is simulated, so the truth is known: items belong to themes, every visitor has a
theme, and a shown item is clicked with probability ``--p-theme`` when it is of the
visitor's theme, ``--p-other`` when not; a click turns into a purchase with probability
``--p-buy``. Nothing else about the visitor depends on what was shown (position included),
which is the item-inclusion model the off-policy estimators assume.

One run:

1. trains two bundles of known quality: **A** on sessions of this shop (it learns which
   items go together), **B** on the same sessions with the item ids scrambled (it learns
   nothing true); signs them with a throwaway key;
2. starts the real pipeline: nats-server, a Kafka-protocol broker, ``proxima central
   bridge`` (NATS → Kafka), ``proxima lake write`` (Kafka → Parquet lake) and one edge
   (``proxima edge serve``) with a ``--holdout`` share, tail exploration and the answer
   log on; A is stable and B a 50 % canary through the rollout KV;
3. ``--sessions`` visitors browse: each view is posted to the edge, an answer asked for,
   clicks and purchases drawn from the response model and posted back with the answer's
   ``request_id``. For every answer the simulator also adds up the *expected* clicks and
   purchases given what was shown (the compensator of the realised outcomes), which is
   what "true" means below;
4. waits until the lake holds every event, then measures from the lake alone: the
   conversion lift of A over the holdout with its interval (:mod:`central.outcomes`), and
   the off-policy estimates (clipped IPS, SNIPS, doubly robust) of A and B replayed over
   the logged answers.

Prints one JSON line: ``true_lift`` and ``measured_lift`` (A over holdout, conversion per
session), ``ci_low``/``ci_high`` (95 %), ``covered``, ``ope_true_order`` (whether the doubly
robust estimate orders A and B as their true clicks per answer do), ``events`` (in the
lake), and the figures behind them.

    python bench/outcomes.py                   # about 2-3 minutes
    python bench/outcomes.py --sessions 4000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import nats
import pyarrow.parquet as pq
from _common import BenchError, HttpServer, venv_script

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from central.datasets import read_log  # noqa: E402
from central.keys import write_keypair  # noqa: E402
from central.lake.layout import open_lake  # noqa: E402
from central.outcomes.attribution import attribute  # noqa: E402
from central.outcomes.logged import read_logged  # noqa: E402
from central.outcomes.offpolicy import evaluate_models  # noqa: E402
from central.outcomes.report import build_report  # noqa: E402
from central.trainer.pipeline import TrainerConfig, train_bundle  # noqa: E402
from devtools.localservers import KafkaBroker, NatsServer  # noqa: E402
from model_export.pack import write_bundle_file  # noqa: E402
from protocol.bundle import read_bundle  # noqa: E402
from protocol.keys import load_public_key  # noqa: E402
from protocol.rollout import RolloutState  # noqa: E402
from protocol.serving import ServingModel  # noqa: E402
from runtime.registry import ModelRegistry  # noqa: E402

UNLIMITED: Final = str(10**9)
REGION: Final = "eu"
K: Final = 10
STEPS: Final = 4
DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Shop:
    themes: int
    per_theme: int

    @property
    def items(self) -> list[str]:
        return [f"it{n:04d}" for n in range(self.themes * self.per_theme)]

    def theme_of(self, item: str) -> int:
        return int(item[2:]) // self.per_theme

    def theme_items(self, theme: int) -> list[str]:
        return self.items[theme * self.per_theme : (theme + 1) * self.per_theme]

    def price_of(self, item: str) -> float:
        return 5.0 + (int(item[2:]) * 37 % 50)


def training_log(shop: Shop, path: Path, sessions: int, rng: random.Random, scramble: bool) -> None:
    """Sessions that browse one theme, walking to nearby items: what a ranker can learn."""
    items = shop.items
    mapping = dict(zip(items, rng.sample(items, len(items)), strict=True)) if scramble else None
    start = 1_767_225_600_000
    with path.open("w") as out:
        out.write("session_id,item_id,timestamp\n")
        for n in range(sessions):
            theme_items = shop.theme_items(rng.randrange(shop.themes))
            position = rng.randrange(len(theme_items))
            ts = start + n * 40_000
            for _ in range(rng.randint(3, 8)):
                position = (position + rng.choice((-2, -1, 1, 2))) % len(theme_items)
                item = theme_items[position]
                out.write(f"t{n},{mapping[item] if mapping else item},{ts // 1000}\n")
                ts += rng.randint(5_000, 60_000)


@dataclass(frozen=True, slots=True)
class Bundles:
    paths: dict[int, Path]
    models: dict[int, ServingModel]
    public_key: Path


def train_bundles(shop: Shop, directory: Path, rng: random.Random) -> Bundles:
    private, public = write_keypair(directory / "keys")
    paths: dict[int, Path] = {}
    models: dict[int, ServingModel] = {}
    for version, scramble in ((1, False), (2, True)):
        log_path = directory / f"train-{version}.csv"
        training_log(shop, log_path, 3000, rng, scramble)
        log, _ = read_log(log_path, "csv")
        result = train_bundle(
            log,
            TrainerConfig(folds=3, max_positions=4_000, max_validation_positions=400),
            version=version,
            private_key_pem=private.read_bytes(),
        )
        paths[version] = directory / f"bundle-{version}.bundle"
        write_bundle_file(paths[version], result.bundle)
        bundle = read_bundle(result.bundle, load_public_key(public.read_bytes()))
        models[version] = ServingModel.from_bundle(bundle)
    return Bundles(paths, models, public)


# --- the pipeline -------------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from central.cli import main; main()", *args]


@contextlib.contextmanager
def background(name: str, argv: Sequence[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            time.sleep(0.5)
            if process.poll() is not None:
                raise BenchError(f"{name} exited at start; see {log_path}")
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def edge_server(
    directory: Path, bundles: Bundles, nats_url: str, args: argparse.Namespace
) -> HttpServer:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
    env.update({
        "PROXIMA_IP_RATE": UNLIMITED, "PROXIMA_IP_BURST": UNLIMITED,
        "PROXIMA_SESSION_RATE": UNLIMITED, "PROXIMA_SESSION_BURST": UNLIMITED,
        "PROXIMA_HOLDOUT_PERCENT": str(args.holdout), "PROXIMA_EXPLORE_RATE": str(args.explore),
        "PROXIMA_EXPLORE_SLOTS": "3", "PROXIMA_EXPLORE_POOL": "15",
        "PROXIMA_EXPLORE_EVERY": "0", "PROXIMA_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1",
    })  # fmt: skip
    proxima = venv_script("proxima")

    def argv(port: int) -> list[str]:
        return [
            proxima, "edge", "serve", "--bundle", str(bundles.paths[1]),
            "--public-key", str(bundles.public_key), "--nats", nats_url,
            "--region", REGION, "--node", "eu1", "--host", "127.0.0.1", "--port", str(port),
            "--spool-dir", str(directory / "spool"),
            "--bundle-cache-dir", str(directory / "bundle-cache"),
        ]  # fmt: skip

    return HttpServer("edge", argv, log_path=directory / "edge.log", env=env, ready_path="/readyz")


async def roll_out(nats_url: str, bundles: Bundles, edge: HttpServer) -> None:
    """A stable, B a 50 % canary, and wait until the edge serves both."""
    connection = await nats.connect(nats_url)
    try:
        registry = ModelRegistry(connection.jetstream())
        for version, path in bundles.paths.items():
            await registry.publish_bundle(path.read_bytes(), version)
        kv = await registry.rollout_kv()
        await kv.put(REGION, RolloutState(stable=1, canary=2, canary_percent=50).encode())
    finally:
        await connection.close()
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            info = (await http.get(f"{edge.base_url}/v1/model")).json()
            canary = info.get("canary") or {}
            if canary.get("version") == 2 and canary.get("percent") == 50:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the edge never loaded the canary: {info}")
            await asyncio.sleep(0.2)


# --- the visitors -------------------------------------------------------------------------------


@dataclass
class ArmTruth:
    sessions: int = 0
    answers: int = 0
    expected_clicks: float = 0.0
    expected_conversions: float = 0.0  # compensator of "bought at least once"


@dataclass
class Visits:
    truth: dict[str, ArmTruth] = field(default_factory=dict)
    events_posted: int = 0
    answers: int = 0


async def visit(
    http: httpx.AsyncClient, edge_url: str, shop: Shop, rng: random.Random,
    args: argparse.Namespace, visits: Visits,
) -> None:  # fmt: skip
    session = "v" + uuid.uuid4().hex[:16]
    theme = rng.randrange(shop.themes)
    own = shop.theme_items(theme)
    bought = False
    arm: ArmTruth | None = None
    for _ in range(STEPS):
        item = rng.choice(own) if rng.random() < 0.8 else rng.choice(shop.items)
        await post(http, edge_url, visits, [event(session, "view", item_id=item)])
        answer = (
            await retried(lambda: http.get(
                f"{edge_url}/v1/recommendations", params={"session_id": session, "k": K}))
        ).json()  # fmt: skip
        visits.answers += 1
        holdout = answer["variant"] == "holdout"
        name = f"{answer['variant']}:{0 if holdout else answer['model_version']}"
        if arm is None:
            arm = visits.truth.setdefault(name, ArmTruth())
            arm.sessions += 1
        arm.answers += 1
        follow_up = []
        for shown in answer["items"]:
            p_click = args.p_theme if shop.theme_of(shown["item_id"]) == theme else args.p_other
            arm.expected_clicks += p_click
            if not bought:
                arm.expected_conversions += p_click * args.p_buy
            if rng.random() < p_click:
                follow_up.append(event(session, "click", item_id=shown["item_id"],
                                       request_id=answer["request_id"]))  # fmt: skip
                if rng.random() < args.p_buy:
                    bought = True
                    follow_up.append(event(session, "purchase", item_id=shown["item_id"],
                                           price=shop.price_of(shown["item_id"])))  # fmt: skip
        if follow_up:
            await post(http, edge_url, visits, follow_up)


async def retried(send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """A request sent again when a kept-alive connection was closed under it (events are
    deduplicated by id, so sending them twice is safe)."""
    for attempt in range(3):
        try:
            return await send()
        except httpx.TransportError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


def event(session: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "session_id": session, "type": kind,
            "ts": int(time.time() * 1000), **fields}  # fmt: skip


async def post(
    http: httpx.AsyncClient, edge_url: str, visits: Visits, events: list[dict[str, Any]]
) -> None:
    response = await retried(lambda: http.post(f"{edge_url}/v1/events", json=events))
    if response.status_code != 202 or response.json()["rejected"]:
        raise BenchError(f"the edge refused events: {response.status_code} {response.text}")
    visits.events_posted += len(events)


async def simulate(edge_url: str, shop: Shop, args: argparse.Namespace) -> Visits:
    visits = Visits()
    rng = random.Random(args.seed)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(args.sessions):
        queue.put_nowait(n)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            await visit(http, edge_url, shop, rng, args, visits)

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(args.concurrency)))
    return visits


def wait_for_lake(lake: Path, expected: int, timeout_s: float) -> int:
    """Rows in the lake once it holds at least ``expected`` (posted + served records)."""
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        if lake.is_dir():
            files = open_lake(lake).data_files()
            count = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
            if count >= expected:
                return count
        time.sleep(1.0)
    raise BenchError(f"the lake holds {count} of {expected} events after {timeout_s:.0f} s")


# --- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    shop = Shop(themes=15, per_theme=20)
    rng = random.Random(args.seed)
    say("training bundle A (the shop's sessions) and B (item ids scrambled)")
    bundles = train_bundles(shop, directory, rng)
    lake = directory / "lake"
    with contextlib.ExitStack() as stack:
        nats_server = stack.enter_context(NatsServer(directory / "nats"))
        broker = stack.enter_context(KafkaBroker(directory / "kafka"))
        stack.enter_context(background("bridge", _cli(
            "central", "bridge", "--nats", nats_server.url, "--kafka", broker.bootstrap,
            "--no-idempotence", "--partitions", "2"), directory / "bridge.log"))  # fmt: skip
        stack.enter_context(background("lake writer", _cli(
            "lake", "write", "--kafka", broker.bootstrap, "--lake", str(lake),
            "--roll-interval", "1s"), directory / "lake.log"))  # fmt: skip
        time.sleep(3)  # the bridge creates the EVENTS stream the edge publishes into
        edge = stack.enter_context(edge_server(directory, bundles, nats_server.url, args))
        asyncio.run(roll_out(nats_server.url, bundles, edge))
        say(
            f"{args.sessions} visitors browsing "
            f"(holdout {args.holdout} %, exploration {args.explore})"
        )
        started = time.monotonic()
        visits = asyncio.run(simulate(edge.base_url, shop, args))
        say(f"  {visits.events_posted} events and {visits.answers} answers in "
            f"{time.monotonic() - started:.0f} s; waiting for the lake")  # fmt: skip
        events = wait_for_lake(lake, visits.events_posted + visits.answers, args.lake_timeout)
    files = open_lake(lake).data_files()
    report = build_report(attribute(files))
    arms = {(arm.variant, arm.bundle): arm for arm in report.arms}
    stable = arms.get(("stable", 1))
    if stable is None or "conversion" not in stable.lift_vs_holdout:
        raise BenchError(f"no stable arm with a holdout to compare: {report.to_dict()}")
    measured = stable.lift_vs_holdout["conversion"]
    truth_a, truth_h = visits.truth["stable:1"], visits.truth["holdout:0"]
    true_lift = (truth_a.expected_conversions / truth_a.sessions) / (
        truth_h.expected_conversions / truth_h.sessions
    ) - 1
    logged = read_logged(files)
    ope = evaluate_models(logged, bundles.models[1], bundles.models[2])
    truth_b = visits.truth["canary:2"]
    true_a = truth_a.expected_clicks / truth_a.answers
    true_b = truth_b.expected_clicks / truth_b.answers
    dr_a, dr_b = ope.candidate["dr"].estimate, ope.baseline["dr"].estimate
    return {
        "true_lift": round(true_lift, 4),
        "measured_lift": round(measured.estimate, 4),
        "ci_low": round(measured.low, 4),
        "ci_high": round(measured.high, 4),
        "covered": measured.covers(true_lift),
        "ope_true_order": (dr_a > dr_b) == (true_a > true_b),
        "events": events,
        "sessions": args.sessions,
        "answers": visits.answers,
        "true_clicks_per_answer": {"A": round(true_a, 4), "B": round(true_b, 4)},
        "ope_clicks_per_answer": {
            name: {
                "A": round(ope.candidate[name].estimate, 4),
                "B": round(ope.baseline[name].estimate, 4),
            }
            for name in ope.candidate
        },
        "ope_error_ratio_dr": round(abs(dr_a - true_a) / true_a, 4),
        "measured_over_true_lift": round((1 + measured.estimate) / (1 + true_lift), 4),
        "anomalies": {k: v for k, v in report.anomalies.items() if v},
        "arms": {f"{variant}:{bundle}": arm.sessions for (variant, bundle), arm in arms.items()},
    }


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--holdout", type=float, default=20.0, help="percent of sessions")
    parser.add_argument("--explore", type=float, default=0.3, help="exploration rate")
    parser.add_argument("--p-theme", type=float, default=0.12)
    parser.add_argument("--p-other", type=float, default=0.01)
    parser.add_argument("--p-buy", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lake-timeout", type=float, default=120.0)
    parser.add_argument("--keep", type=Path, help="keep the working directory here")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="proxima-outcomes-") as directory:
            result = run(args, Path(directory))
    print(json.dumps(result, sort_keys=True))
    return 0 if result["covered"] and result["ope_true_order"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
