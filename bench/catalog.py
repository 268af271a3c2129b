"""Catalog propagation: how fast an availability change reaches two edges, and whether any
edge serves an item after it said it had applied the change.

One run:

1. trains a small signed bundle on a synthetic shop log (throwaway key), starts a real
   nats-server, the central catalog service (``proxima catalog serve``, its own process)
   and two edges (``proxima edge serve --nats``) in two regions, ``eu`` and ``us``; the
   catalog starts with every item of the bundle available;
2. a client keeps asking both edges for recommendations (one request in flight per edge);
   meanwhile ``--updates`` changes go to the catalog API, each marking an item the edges
   are serving right now unavailable (and, every other time, one made unavailable before
   available again), ``--interval`` apart;
3. propagation of a change to an edge = the time from sending the change to the API to
   the first answer of that edge that reports a ``catalog_revision`` at least as new as the
   change's (the API's acknowledgement carries it); ``after_ack`` is the same from the
   acknowledgement on (0 when the edge had it before the client had the acknowledgement);
   ``served_unavailable`` counts answers that list an item which, at the catalog revision
   the answer reports, was unavailable: it must be 0. ``served_during_propagation`` counts
   answers requested after the acknowledgement but computed on an older revision (expected:
   they are what propagation bounds);
4. the comparison, measured in the same run on the same server: a bare KV put seen by a
   bare KV watcher (the floor of any propagation through the bus), p50 and p99.

Prints one JSON line. Timings on a shared machine are noisy; compare within one run.

    python bench/catalog.py                        # about 30 s
    python bench/catalog.py --updates 400 --interval 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import nats
from _common import HttpServer, median, venv_script

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from central.datasets import read_log  # noqa: E402
from central.keys import write_keypair  # noqa: E402
from central.trainer.pipeline import TrainerConfig, train_bundle  # noqa: E402
from devtools.localservers import NatsServer  # noqa: E402
from devtools.loggen import GeneratorConfig, generate_file  # noqa: E402
from model_export.pack import write_bundle_file  # noqa: E402
from protocol.bundle import read_bundle  # noqa: E402
from protocol.keys import load_public_key  # noqa: E402
from protocol.tables import CandidateTables  # noqa: E402

TOKEN: Final = "bench-catalog-token-0123456789"
UNLIMITED: Final = str(10**9)
EDGE_ENV: Final = {
    "PROXIMA_IP_RATE": UNLIMITED,
    "PROXIMA_IP_BURST": UNLIMITED,
    "PROXIMA_SESSION_RATE": UNLIMITED,
    "PROXIMA_SESSION_BURST": UNLIMITED,
    "PROXIMA_LOG_LEVEL": "warning",
    "PROXIMA_EXPLORE_EVERY": "0",
    "OMP_NUM_THREADS": "1",
}
REGIONS: Final = ("eu", "us")


@dataclass
class Answer:
    requested: float
    received: float
    revision: int
    items: list[str]


@dataclass
class Change:
    item: str
    available: bool
    revision: int
    sent: float
    acked: float


@dataclass
class Timeline:
    """Per item, its availability by catalog revision."""

    changes: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)

    def add(self, item: str, revision: int, available: bool) -> None:
        self.changes.setdefault(item, []).append((revision, available))

    def available_at(self, item: str, revision: int) -> bool:
        history = self.changes.get(item)
        if not history:
            return True
        at = bisect.bisect_right(history, (revision, True)) - 1
        return True if at < 0 else history[at][1]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


def prepare(directory: Path) -> tuple[Path, Path, list[str]]:
    log_path = directory / "shop.csv"
    generate_file(log_path, GeneratorConfig(sessions=600, items=400, categories=8, seed=5, days=10))
    private, public = write_keypair(directory / "keys")
    log, _ = read_log(log_path, "csv")
    result = train_bundle(
        log,
        TrainerConfig(folds=3, max_positions=2_000, max_validation_positions=300),
        version=1,
        private_key_pem=private.read_bytes(),
    )
    bundle = directory / "shop.bundle"
    write_bundle_file(bundle, result.bundle)
    verified = read_bundle(result.bundle, load_public_key(public.read_bytes()))
    return bundle, public, list(CandidateTables.from_parts(verified.parts).item_ids)


@contextlib.contextmanager
def servers(directory: Path) -> Iterator[tuple[NatsServer, HttpServer]]:
    proxima = venv_script("proxima")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}
    with contextlib.ExitStack() as stack:
        nats_server = stack.enter_context(NatsServer(directory / "nats"))
        catalog = HttpServer(
            "catalog",
            lambda port: [proxima, "catalog", "serve", "--nats", nats_server.url,
                          "--port", str(port)],
            log_path=directory / "catalog.log",
            env={**env, "PROXIMA_CATALOG_TOKEN": TOKEN},
        )  # fmt: skip
        stack.enter_context(catalog)
        yield nats_server, catalog


def edge(directory: Path, bundle: Path, public_key: Path, nats_url: str, region: str) -> HttpServer:
    proxima = venv_script("proxima")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_")}

    def argv(port: int) -> list[str]:
        return [
            proxima, "edge", "serve", "--bundle", str(bundle), "--public-key", str(public_key),
            "--nats", nats_url, "--region", region, "--node", f"{region}1",
            "--host", "127.0.0.1", "--port", str(port),
            "--spool-dir", str(directory / f"spool-{region}"),
            "--bundle-cache-dir", str(directory / f"cache-{region}"),
        ]  # fmt: skip

    return HttpServer(
        f"edge {region}", argv, log_path=directory / f"edge-{region}.log",
        env={**env, **EDGE_ENV}, ready_path="/readyz",
    )  # fmt: skip


async def kv_floor(nats_url: str, samples: int) -> list[float]:
    """Milliseconds from a bare KV put to a bare watcher seeing it."""
    writer = await nats.connect(nats_url)
    reader = await nats.connect(nats_url)
    try:
        kv = await writer.jetstream().create_key_value(bucket="bench-floor", history=1)
        watched = await reader.jetstream().key_value("bench-floor")
        watcher: Any = await watched.watch("probe")
        delays = []
        for n in range(samples):
            started = time.perf_counter()
            await kv.put(
                "probe",
                json.dumps({"n": n, "available": n % 2 == 0}, separators=(",", ":")).encode(),
            )
            while True:
                entry = await watcher.updates(timeout=5)
                if entry is not None and entry.value is not None and b'"n":%d,' % n in entry.value:
                    break
            delays.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.005)
        await watcher.stop()
        return delays
    finally:
        await writer.close()
        await reader.close()


async def run(args: argparse.Namespace, catalog_url: str, edges: list[str], items: list[str],
              ) -> dict[str, Any]:  # fmt: skip
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        seeded = await http.put(
            f"{catalog_url}/v1/catalog/items", json=[{"id": i, "available": True} for i in items]
        )
        seeded.raise_for_status()
        seed_revision = max(o["revision"] for o in seeded.json()["items"])
        answers: dict[str, list[Answer]] = {url: [] for url in edges}
        stop = asyncio.Event()

        async def ask(url: str) -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                while not stop.is_set():
                    requested = time.perf_counter()
                    response = await client.get(
                        f"{url}/v1/recommendations", params={"session_id": "bench-catalog"}
                    )
                    body = response.json()
                    answers[url].append(
                        Answer(
                            requested,
                            time.perf_counter(),
                            int(body.get("catalog_revision") or 0),
                            [entry["item_id"] for entry in body["items"]],
                        )
                    )

        async def caught_up() -> None:
            while not all(a and a[-1].revision >= seed_revision for a in answers.values()):
                await asyncio.sleep(0.05)

        askers = [asyncio.create_task(ask(url)) for url in edges]
        await asyncio.wait_for(caught_up(), 30)
        timeline = Timeline()
        changes: list[Change] = []
        hidden: list[str] = []
        for n in range(args.updates):
            latest = answers[edges[n % len(edges)]][-1].items
            flip_back = n % 2 == 1 and hidden
            if flip_back:
                item, available = hidden.pop(0), True
            else:
                fresh = [i for i in latest[:5] if i not in hidden] or latest
                item, available = fresh[n % len(fresh)], False
                hidden.append(item)
            sent = time.perf_counter()
            response = await http.patch(
                f"{catalog_url}/v1/catalog/items", json={"id": item, "available": available}
            )
            acked = time.perf_counter()
            response.raise_for_status()
            outcome = response.json()["items"][0]
            if outcome["status"] == "unchanged":
                continue
            revision = outcome["revision"]
            timeline.add(item, revision, available)
            changes.append(Change(item, available, revision, sent, acked))
            await asyncio.sleep(args.interval)
        final = changes[-1].revision

        async def drained() -> None:
            while not all(a[-1].revision >= final for a in answers.values()):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(drained(), 30)
        stop.set()
        await asyncio.gather(*askers)

    propagation: list[float] = []  # from the change being sent to the API
    after_ack: list[float] = []  # from the API's acknowledgement (0 when seen before it)
    served_unavailable = served_in_flight = total = 0
    for url in edges:
        seen = answers[url]
        revisions = [a.revision for a in seen]
        for change in changes:
            at = bisect.bisect_left(revisions, change.revision)
            if at < len(seen):
                propagation.append((seen[at].received - change.sent) * 1000)
                after_ack.append(max(0.0, (seen[at].received - change.acked) * 1000))
        for answer in seen:
            total += 1
            for item in answer.items:
                if not timeline.available_at(item, answer.revision):
                    served_unavailable += 1
        for change in changes:
            if change.available:
                continue
            for answer in seen:
                if answer.requested > change.acked and answer.revision < change.revision:
                    served_in_flight += change.item in answer.items
    floor = await kv_floor(args.nats_url, args.floor_samples)
    p99 = percentile(propagation, 0.99)
    floor_p99 = percentile(floor, 0.99)
    return {
        "updates": len(changes),
        "edges": len(edges),
        "propagation_p50_ms": round(median(propagation), 3),
        "propagation_p99_ms": round(p99, 3),
        "propagation_max_ms": round(max(propagation), 3),
        "after_ack_p50_ms": round(median(after_ack), 3),
        "after_ack_p99_ms": round(percentile(after_ack, 0.99), 3),
        "served_unavailable": served_unavailable,
        "served_during_propagation": served_in_flight,
        "answers": total,
        "kv_watch_p50_ms": round(median(floor), 3),
        "kv_watch_p99_ms": round(floor_p99, 3),
        "propagation_p99_over_kv_watch_p99": round(p99 / floor_p99, 2) if floor_p99 else None,
        "goal_p99_ms": 1000.0,
        "pass": p99 < 1000.0 and served_unavailable == 0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02, help="Seconds between updates.")
    parser.add_argument("--floor-samples", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="proxima-bench-catalog-") as temp:
        directory = Path(temp)
        bundle, public_key, items = prepare(directory)
        with servers(directory) as (nats_server, catalog):
            args.nats_url = nats_server.url
            # The catalog exists before the edges start: they bootstrap it before ready.
            with httpx.Client(headers={"authorization": f"Bearer {TOKEN}"}) as http:
                http.put(f"{catalog.base_url}/v1/catalog/items", json={"id": items[0]})
            with contextlib.ExitStack() as stack:
                urls = []
                for region in REGIONS:
                    server = edge(directory, bundle, public_key, nats_server.url, region)
                    stack.enter_context(server)
                    urls.append(server.base_url)
                result = asyncio.run(run(args, catalog.base_url, urls, items))
    print(json.dumps(result, sort_keys=True))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
