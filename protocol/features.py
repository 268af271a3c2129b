"""Ranker features: one fixed, versioned row per (session, candidate) pair.

The edge computes these to serve and the trainer computes them, through the same
function, to learn: change a feature and you change ``FEATURE_SCHEMA_VERSION``, and
bundles built for another version are refused. Every column is computed for all
candidates at once; the only Python loops run over the session's own (≤ window) items.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from protocol.candidates import Candidates
from protocol.tables import CandidateTables, Floats, Ints
from protocol.window import ADD_TO_CART, CLICK, PURCHASE, SEARCH, VIEW, SessionWindow

FEATURE_SCHEMA_VERSION: Final = 1
FEATURE_NAMES: Final[tuple[str, ...]] = (
    "covis",  # recency-weighted co-visitation score, log1p
    "covis_share",  # covis / the best covis among the candidates
    "covis_rank",  # 1 / rank by covis among the candidates (0 when no co-visitation)
    "covis_last_share",  # co-visitation with the last item / its best
    "sknn",  # neighbour-session score, log1p
    "sknn_share",
    "sknn_rank",
    "pop_all",  # log1p of the item's events in the training log
    "pop_recent",  # log1p of its events in the log's last days
    "pop_recent_share",  # pop_recent / the best pop_recent among the candidates
    "in_session",  # 1 when the session has seen the item
    "session_count",  # how often the session saw the item, log1p
    "session_recency",  # 1 / recency rank of the item among the session's items
    "is_last_item",
    "since_seen",  # log1p seconds since the session last saw it (sentinel when never)
    "category_share",  # share of the session's events in the item's category
    "same_category_as_last",
    "in_cart",
    "price_ratio",  # log(price / session mean price), 0 when either is unknown
    "has_price",
    "session_events",  # log1p events in the window
    "session_items",  # log1p distinct items in the window
    "session_age",  # log1p seconds from the window's first event to now
    "views",
    "clicks",
    "carts",
    "purchases",
    "searches",
)
N_FEATURES: Final = len(FEATURE_NAMES)


def compute(
    window: SessionWindow,
    candidates: Candidates,
    tables: CandidateTables,
    now_ms: int | None = None,
) -> npt.NDArray[np.float32]:
    """Feature matrix ``[len(candidates), N_FEATURES]`` in ``FEATURE_NAMES`` order."""
    items = candidates.items
    n = items.shape[0]
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out
    out[:, 0] = np.log1p(candidates.covis)
    out[:, 1] = _share(candidates.covis)
    out[:, 2] = _inverse_rank(candidates.covis)
    out[:, 3] = _share(candidates.covis_last)
    out[:, 4] = np.log1p(candidates.sknn)
    out[:, 5] = _share(candidates.sknn)
    out[:, 6] = _inverse_rank(candidates.sknn)
    pop_recent = tables.pop_recent[items]
    out[:, 7] = np.log1p(tables.pop_all[items])
    out[:, 8] = np.log1p(pop_recent)
    out[:, 9] = _share(pop_recent)

    if candidates.session_items.shape[0]:
        _session_item_features(out, window, candidates, tables)
    refresh_clock(out, window, candidates, tables, now_ms)

    categories = tables.category[items]
    n_events = len(window)
    if window.category_counts and n_events:
        out[:, 15] = _per_category(window, tables, categories) / n_events
        last = window.last_item
        last_index = tables.item_index.get(last) if last is not None else None
        if last_index is not None and tables.category[last_index] >= 0:
            out[:, 16] = categories == tables.category[last_index]

    prices = tables.price[items]
    session_price = _mean_price(window)
    if session_price is not None:
        known = np.isfinite(prices) & (prices > 0)
        out[:, 18] = np.where(known, np.log(np.where(known, prices, 1.0) / session_price), 0.0)
    out[:, 19] = np.isfinite(prices)

    counts = window.type_counts
    out[:, 20] = math.log1p(n_events)
    out[:, 21] = math.log1p(len(window.item_counts))
    for column, type_code in zip(
        range(23, 28), (VIEW, CLICK, ADD_TO_CART, PURCHASE, SEARCH), strict=True
    ):
        out[:, column] = math.log1p(counts[type_code])
    return out


def refresh_clock(
    out: npt.NDArray[np.float32],
    window: SessionWindow,
    candidates: Candidates,
    tables: CandidateTables,
    now_ms: int | None,
) -> None:
    """(Re)computes the columns that move with the clock: ``since_seen``, ``session_age``.

    The rest of a row depends only on the window and the tables, so a server may keep a
    matrix while the window is unchanged and refresh just these before scoring it again.
    """
    now = max(now_ms or 0, window.last_ts or 0)
    out[:, 14] = math.log1p(window.config.span_ms / 1000.0) + 1.0
    session = candidates.session_items
    if session.shape[0]:
        names = [tables.item_ids[i] for i in session]
        last_seen = window.item_last_ts
        seen_ago = np.fromiter(
            ((now - last_seen[name]) / 1000.0 for name in names), np.float32, len(names)
        )
        rows, source = candidates.session_rows, candidates.session_ranks
        out[rows, 14] = np.log1p(np.maximum(seen_ago[source], 0.0))
    first_ts = window.first_ts
    out[:, 22] = math.log1p(max(0, now - first_ts) / 1000.0) if first_ts is not None else 0.0


def _session_item_features(
    out: npt.NDArray[np.float32],
    window: SessionWindow,
    candidates: Candidates,
    tables: CandidateTables,
) -> None:
    names = [tables.item_ids[i] for i in candidates.session_items]
    counts = np.fromiter((window.item_counts[name] for name in names), np.float32, len(names))
    carted = np.fromiter((name in window.carted for name in names), np.float32, len(names))
    recency = 1.0 / np.arange(1, len(names) + 1, dtype=np.float32)
    rows, source = candidates.session_rows, candidates.session_ranks
    out[rows, 10] = 1.0
    out[rows, 11] = np.log1p(counts[source])
    out[rows, 12] = recency[source]
    out[rows, 13] = source == 0
    out[rows, 17] = carted[source]


def _per_category(window: SessionWindow, tables: CandidateTables, categories: Ints) -> Floats:
    index = tables.category_index
    known = [(index[c], k) for c, k in window.category_counts.items() if c in index]
    if not known:
        return np.zeros(categories.shape[0], dtype=np.float32)
    codes = np.asarray([c for c, _ in known], dtype=np.int32)
    counts = np.asarray([k for _, k in known], dtype=np.float32)
    order = np.argsort(codes)
    codes, counts = codes[order], counts[order]
    position = np.searchsorted(codes, categories)
    position[position == codes.shape[0]] = 0
    return np.where(codes[position] == categories, counts[position], 0.0).astype(np.float32)


def _mean_price(window: SessionWindow) -> float | None:
    prices = [e.price for e in window.entries if e.price is not None and e.price > 0]
    return sum(prices) / len(prices) if prices else None


def _share(values: Floats) -> Floats:
    best = float(values.max()) if values.shape[0] else 0.0
    return values / best if best > 0 else np.zeros_like(values)


def _inverse_rank(values: Floats) -> Floats:
    """1 / (1 + number of candidates scoring strictly higher); 0 where the score is 0."""
    negated = np.sort(-values)
    higher = np.searchsorted(negated, -values, side="left")  # how many score strictly higher
    ranks = higher.astype(np.float32) + 1.0
    return np.where(values > 0, 1.0 / ranks, 0.0).astype(np.float32)
