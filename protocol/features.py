"""Ranker features: one fixed, versioned row per (session, candidate) pair.

The edge computes these to serve and the trainer computes them, through the same
function, to learn: change a feature and you change ``FEATURE_SCHEMA_VERSION``, and
bundles built for another version are refused. Every column is computed for all
candidates at once; the only Python loops run over the session's own (≤ window) items.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from protocol.candidates import Candidates
from protocol.tables import CandidateTables, Floats, Ints
from protocol.window import ADD_TO_CART, CLICK, PURCHASE, SEARCH, VIEW, SessionWindow

FEATURE_SCHEMA_VERSION: Final = 2


class Column(IntEnum):
    """The ranker's feature columns, by name, in matrix order.

    This is the fixed, versioned list: adding, removing, renaming or renumbering a column
    changes ``FEATURE_SCHEMA_VERSION``. Address columns by these names, never by number.
    """

    covis = 0  # recency-weighted co-visitation score, log1p
    covis_share = 1  # covis / the best covis among the candidates
    covis_rank = 2  # 1 / rank by covis among the candidates (0 when no co-visitation)
    covis_last_share = 3  # co-visitation with the last item / its best
    sknn = 4  # neighbour-session score, log1p
    sknn_share = 5
    sknn_rank = 6
    pop_all = 7  # log1p of the item's events in the training log
    pop_recent = 8  # log1p of its events in the log's last days
    pop_recent_share = 9  # pop_recent / the best pop_recent among the candidates
    in_session = 10  # 1 when the session has seen the item
    session_count = 11  # how often the session saw the item, log1p
    session_recency = 12  # 1 / recency rank of the item among the session's items
    is_last_item = 13
    since_seen = 14  # log1p seconds since the session last saw it (sentinel when never)
    category_share = 15  # share of the session's events in the item's category
    same_category_as_last = 16
    in_cart = 17
    price_ratio = 18  # log(price / session mean price), 0 when either is unknown
    has_price = 19
    session_events = 20  # log1p events in the window
    session_items = 21  # log1p distinct items in the window
    session_age = 22  # log1p seconds from the window's first event to now
    views = 23
    clicks = 24
    carts = 25
    purchases = 26
    searches = 27
    # Repeat consumption: how the session went back and forth over its own items.
    steps_since_seen = 28  # log1p events of the window after the item's last (sentinel: never)
    dwell = 29  # log1p seconds from the item's events to the events after them, summed
    dwell_share = 30  # dwell / the longest dwell among the session's items
    last_run = 31  # log1p events in a row of the last item at the window's end; 0 for others
    repeat_share = 32  # share of the window's item events that return to an item seen before


FEATURE_NAMES: Final[tuple[str, ...]] = tuple(column.name for column in Column)
N_FEATURES: Final = len(FEATURE_NAMES)


# Columns that move with the clock; the others depend only on the window and the tables.
CLOCK_COLUMNS: Final = (Column.since_seen, Column.session_age)
_TYPE_COLUMNS: Final = (
    (Column.views, VIEW),
    (Column.clicks, CLICK),
    (Column.carts, ADD_TO_CART),
    (Column.purchases, PURCHASE),
    (Column.searches, SEARCH),
)


def compute(
    window: SessionWindow,
    candidates: Candidates,
    tables: CandidateTables,
    now_ms: int,
) -> npt.NDArray[np.float32]:
    """Feature matrix ``[len(candidates), N_FEATURES]`` in ``Column`` order, as of ``now_ms``.

    Which time ``now_ms`` is (the event's or the request's) is the policy of
    :mod:`protocol.featurize`, the one caller that composes candidates and features.
    """
    items = candidates.items
    n = items.shape[0]
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out
    out[:, Column.covis] = np.log1p(candidates.covis)
    out[:, Column.covis_share] = _share(candidates.covis)
    out[:, Column.covis_rank] = _inverse_rank(candidates.covis)
    out[:, Column.covis_last_share] = _share(candidates.covis_last)
    out[:, Column.sknn] = np.log1p(candidates.sknn)
    out[:, Column.sknn_share] = _share(candidates.sknn)
    out[:, Column.sknn_rank] = _inverse_rank(candidates.sknn)
    pop_recent = tables.pop_recent[items]
    out[:, Column.pop_all] = np.log1p(tables.pop_all[items])
    out[:, Column.pop_recent] = np.log1p(pop_recent)
    out[:, Column.pop_recent_share] = _share(pop_recent)

    refresh_clock(out, window, candidates, tables, now_ms)

    categories = tables.category[items]
    n_events = len(window)
    if window.category_counts and n_events:
        out[:, Column.category_share] = _per_category(window, tables, categories) / n_events
        last = window.last_item
        last_index = tables.item_index.get(last) if last is not None else None
        if last_index is not None and tables.category[last_index] >= 0:
            out[:, Column.same_category_as_last] = categories == tables.category[last_index]

    prices = tables.price[items]
    session_price = _mean_price(window)
    if session_price is not None:
        known = np.isfinite(prices) & (prices > 0)
        ratio = np.log(np.where(known, prices, 1.0) / session_price)
        out[:, Column.price_ratio] = np.where(known, ratio, 0.0)
    out[:, Column.has_price] = np.isfinite(prices)

    counts = window.type_counts
    item_events = sum(window.item_counts.values())
    if item_events:
        out[:, Column.repeat_share] = (item_events - len(window.item_counts)) / item_events
    out[:, Column.steps_since_seen] = math.log1p(window.config.max_events) + 1.0
    if candidates.session_items.shape[0]:
        _session_item_features(out, window, candidates, tables)
    out[:, Column.session_events] = math.log1p(n_events)
    out[:, Column.session_items] = math.log1p(len(window.item_counts))
    for column, type_code in _TYPE_COLUMNS:
        out[:, column] = math.log1p(counts[type_code])
    return out


def refresh_clock(
    out: npt.NDArray[np.float32],
    window: SessionWindow,
    candidates: Candidates,
    tables: CandidateTables,
    now_ms: int,
) -> None:
    """(Re)computes the :data:`CLOCK_COLUMNS` of ``out`` as of ``now_ms``.

    The rest of a row depends only on the window and the tables, so a server may keep a
    matrix while the window is unchanged and refresh just these before scoring it again.
    A ``now_ms`` before the window's last event counts as that event's time: a clock
    behind the one that stamped the window must not make ages negative.
    """
    now = max(now_ms, window.last_ts or 0)
    out[:, Column.since_seen] = math.log1p(window.config.span_ms / 1000.0) + 1.0
    session = candidates.session_items
    if session.shape[0]:
        names = [tables.item_ids[i] for i in session]
        last_seen = window.item_last_ts
        seen_ago = np.fromiter(
            ((now - last_seen[name]) / 1000.0 for name in names), np.float32, len(names)
        )
        rows, source = candidates.session_rows, candidates.session_ranks
        out[rows, Column.since_seen] = np.log1p(np.maximum(seen_ago[source], 0.0))
    first_ts = window.first_ts
    out[:, Column.session_age] = (
        math.log1p(max(0, now - first_ts) / 1000.0) if first_ts is not None else 0.0
    )


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
    steps, dwell, run = _visits(window, names)
    rows, source = candidates.session_rows, candidates.session_ranks
    out[rows, Column.in_session] = 1.0
    out[rows, Column.session_count] = np.log1p(counts[source])
    out[rows, Column.session_recency] = recency[source]
    out[rows, Column.is_last_item] = source == 0
    out[rows, Column.in_cart] = carted[source]
    out[rows, Column.steps_since_seen] = np.log1p(steps[source])
    out[rows, Column.dwell] = np.log1p(dwell[source])
    out[rows, Column.dwell_share] = _share(dwell)[source]
    out[rows, Column.last_run] = np.where(source == 0, math.log1p(run), 0.0)


def _visits(window: SessionWindow, names: list[str]) -> tuple[Floats, Floats, int]:
    """Per session item (``names``, most recent first): events of the window after its
    last one, and seconds spent on it (the gaps from its events to the next, each at most
    the window's span); and how many events in a row the window ends with its last item."""
    entries = window.entries
    n = len(entries)
    last_position: dict[str, int] = {}
    spent: dict[str, float] = {}
    cap = window.config.span_ms
    for position, entry in enumerate(entries):
        item = entry.item
        if item is None:
            continue
        last_position[item] = position
        if position + 1 < n:
            gap = min(max(entries[position + 1].ts - entry.ts, 0), cap)
            spent[item] = spent.get(item, 0.0) + gap / 1000.0
    steps = np.fromiter((n - 1 - last_position[name] for name in names), np.float32, len(names))
    dwell = np.fromiter((spent.get(name, 0.0) for name in names), np.float32, len(names))
    run = 0
    last = names[0]
    for entry in reversed(entries):
        if entry.item is None:
            continue
        if entry.item != last:
            break
        run += 1
    return steps, dwell, run


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
