"""The straightforward recommendation server that ``bench/edge_latency.py`` compares the edge to.

Built from the parts one reaches for first, with nothing tuned:

* a plain Starlette app under uvicorn with the edge's own server settings (uvloop,
  httptools, access log off), so the HTTP layer is not what differs;
* session state in Redis, read on every request: ``POST /v1/events`` appends each event
  (JSON) to the list ``naive:sess:<session_id>`` (trimmed to the window's size, expiring with
  its span); ``GET /v1/recommendations`` reads the list back and rebuilds the window;
* candidates built with Python loops over the bundle's co-visitation lists (the last few
  session items, weighted by recency), the session's own items first, topped up with the
  recently popular items to the bundle's minimum pool size. There is no session-kNN pass,
  so the baseline does less candidate work than the edge;
* feature rows from :func:`protocol.features.compute`, the code the ranker was trained on;
* scores from scikit-learn ``predict_proba`` of a ``StandardScaler`` + ``MLPClassifier``
  pipeline (pickled with joblib by the benchmark's prepare step), in the handler.

    python bench/naive_edge.py --bundle B --public-key K --model M.joblib \\
        --redis redis://127.0.0.1:6379/0 --port 8081
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from threadpoolctl import threadpool_limits

from protocol import features
from protocol.bundle import read_bundle
from protocol.candidates import CandidateConfig, Candidates, session_rows
from protocol.errors import EventError
from protocol.events import validate_event
from protocol.keys import load_public_key
from protocol.tables import CandidateTables
from protocol.window import SessionWindow, WindowConfig

KEY_PREFIX: Final = "naive:sess:"
MAX_K: Final = 100


@dataclass(frozen=True, slots=True)
class NaiveModel:
    tables: CandidateTables
    covis: list[list[tuple[int, float]]]  # per item: (neighbour, weight), best first
    popular: list[int]  # item indices by recent popularity
    model: Any  # a fitted scikit-learn classifier with predict_proba
    window_config: WindowConfig
    candidate_config: CandidateConfig

    @classmethod
    def load(cls, bundle: Path, public_key: Path, model: Path) -> NaiveModel:
        verified = read_bundle(bundle.read_bytes(), load_public_key(public_key.read_bytes()))
        tables = CandidateTables.from_parts(verified.parts)
        config = verified.manifest.config
        indptr = tables.covis_indptr.tolist()
        neighbours = tables.covis_indices.tolist()
        weights = tables.covis_weights.tolist()
        covis = [
            list(
                zip(
                    neighbours[indptr[i] : indptr[i + 1]],
                    weights[indptr[i] : indptr[i + 1]],
                    strict=True,
                )
            )
            for i in range(tables.n_items)
        ]
        return cls(
            tables=tables,
            covis=covis,
            popular=tables.recent_order.tolist(),
            model=joblib.load(model),
            window_config=WindowConfig(**config.get("window", {})),
            candidate_config=CandidateConfig(**config.get("candidates", {})),
        )


def build_candidates(window: SessionWindow, naive: NaiveModel) -> Candidates | None:
    """Session items, co-visitation neighbours and popular items, with plain dicts and lists;
    ``None`` when the session holds no known item."""
    config = naive.candidate_config
    index = naive.tables.item_index
    session = [index[item] for item in window.recent_items() if item in index]
    if not session:
        return None
    scores: dict[int, float] = {}
    for rank, item in enumerate(session[: config.covis_recent_items], start=1):
        for neighbour, weight in naive.covis[item]:
            scores[neighbour] = scores.get(neighbour, 0.0) + weight / rank
    last = dict(naive.covis[session[0]])

    pool = session[: config.session_items]
    taken = set(pool)
    for item in sorted(scores, key=scores.__getitem__, reverse=True)[: config.covis_candidates]:
        if item not in taken:
            pool.append(item)
            taken.add(item)
    for item in naive.popular:
        if len(pool) >= config.min_candidates:
            break
        if item not in taken:
            pool.append(item)
            taken.add(item)
    if window.bought:
        bought = {index[item] for item in window.bought if item in index}
        pool = [item for item in pool if item not in bought]
    items = np.array(pool, dtype=np.int32)
    session_items = np.array(session, dtype=np.int32)
    rows, ranks = session_rows(items, session_items)
    return Candidates(
        items=items,
        covis=np.array([scores.get(item, 0.0) for item in pool], dtype=np.float32),
        covis_last=np.array([last.get(item, 0.0) for item in pool], dtype=np.float32),
        sknn=np.zeros(len(pool), dtype=np.float32),
        session_items=session_items,
        session_rows=rows,
        session_ranks=ranks,
    )


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message}}, status_code=status)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def post_events(request: Request) -> Response:
    naive: NaiveModel = request.app.state.naive
    redis: aioredis.Redis = request.app.state.redis
    try:
        body = json.loads(await request.body())
        raw_events = body if isinstance(body, list) else [body]
        events = [validate_event(raw) for raw in raw_events]
    except (ValueError, EventError) as exc:
        return _error(400, str(exc))
    received_at = int(time.time() * 1000)
    window = naive.window_config
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            key = KEY_PREFIX + event.session_id
            stamped = {**event.to_dict(), "received_at": received_at}
            pipe.rpush(key, json.dumps(stamped))
            pipe.ltrim(key, -window.max_events, -1)
            pipe.pexpire(key, window.span_ms)
        await pipe.execute()
    return JSONResponse({"accepted": len(events)}, status_code=202)


async def get_recommendations(request: Request) -> Response:
    naive: NaiveModel = request.app.state.naive
    redis: aioredis.Redis = request.app.state.redis
    session_id = request.query_params.get("session_id")
    k_text = request.query_params.get("k", "20")
    if not session_id:
        return _error(400, "session_id is required")
    if not k_text.isdigit() or not 1 <= int(k_text) <= MAX_K:
        return _error(400, f"k must be 1-{MAX_K}")
    k = int(k_text)

    stored = await redis.lrange(KEY_PREFIX + session_id, 0, -1)
    window = SessionWindow(session_id, naive.window_config)
    for blob in stored:
        window.add(validate_event(json.loads(blob)))

    tables = naive.tables
    candidates = build_candidates(window, naive)
    if candidates is None:
        top = naive.popular[:k]
        items = [(tables.item_ids[i], float(tables.pop_recent[i])) for i in top]
        cold = True
    else:
        matrix = features.compute(window, candidates, tables, int(time.time() * 1000))
        scores = naive.model.predict_proba(matrix)[:, 1].tolist()
        pool = candidates.items.tolist()
        order = sorted(range(len(pool)), key=scores.__getitem__, reverse=True)[:k]
        items = [(tables.item_ids[pool[i]], scores[i]) for i in order]
        cold = False
    return JSONResponse(
        {
            "session_id": session_id,
            "items": [{"item_id": name, "score": round(score, 6)} for name, score in items],
            "cold": cold,
        }
    )


def create_app(naive: NaiveModel, redis_url: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = aioredis.from_url(redis_url)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/events", post_events, methods=["POST"]),
            Route("/v1/recommendations", get_recommendations, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.naive = naive
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The naive baseline recommendation server.")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--public-key", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="joblib file of the classifier")
    parser.add_argument("--redis", required=True, help="redis URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    # One BLAS thread: the server is measured per core, as the edge's ONNX Runtime is.
    threadpool_limits(limits=1)
    naive = NaiveModel.load(args.bundle, args.public_key, args.model)
    config = uvicorn.Config(
        create_app(naive, args.redis),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
