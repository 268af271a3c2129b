"""Builds :class:`~protocol.tables.CandidateTables` from an event log, vectorised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from central.errors import TrainingError
from central.eventlog import EventLog
from protocol.tables import CandidateTables

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TableConfig:
    covis_distance: int = 5  # pairs up to this many positions apart, weight 1/distance
    covis_neighbours: int = 100  # kept per item
    recent_days: float = 7.0
    max_sessions: int = 200_000  # most recent sessions indexed for session-kNN
    sessions_per_item: int = 500  # most recent indexed sessions kept per item


def build_tables(log: EventLog, config: TableConfig | None = None) -> CandidateTables:
    config = config or TableConfig()
    if log.n_events == 0:
        raise TrainingError("cannot build candidate tables from an empty log")
    used, inverse = np.unique(log.item, return_inverse=True)
    item: npt.NDArray[np.int32] = inverse.astype(np.int32)
    n_items = used.shape[0]
    item_ids = [log.item_ids[code] for code in used]

    category_codes, categories = _item_categories(log, item, n_items)
    covis = _covisitation(log.session, item, n_items, config)
    sessions = _session_index(log, item, n_items, config)
    recent = log.ts >= log.ts.max() - int(config.recent_days * DAY_MS)
    return CandidateTables(
        item_ids=item_ids,
        categories=categories,
        covis_indptr=covis[0],
        covis_indices=covis[1],
        covis_weights=covis[2],
        pop_all=np.bincount(item, minlength=n_items).astype(np.float32),
        pop_recent=np.bincount(item[recent], minlength=n_items).astype(np.float32),
        category=category_codes,
        price=_last_known(log.price, item, log.ts, n_items),
        sess_indptr=sessions[0],
        sess_items=sessions[1],
        item_sess_indptr=sessions[2],
        item_sess=sessions[3],
    )


def _item_categories(
    log: EventLog, item: npt.NDArray[np.int32], n_items: int
) -> tuple[npt.NDArray[np.int32], list[str]]:
    """Each item's last known category, re-coded over the categories in use."""
    raw = np.full(n_items, -1, dtype=np.int32)
    latest = _latest_rows(log.category >= 0, item, log.ts)
    raw[item[latest]] = log.category[latest]
    used = np.unique(raw[raw >= 0])
    codes = np.full(n_items, -1, dtype=np.int32)
    has = raw >= 0
    codes[has] = np.searchsorted(used, raw[has]).astype(np.int32)
    return codes, [log.categories[c] for c in used]


def _last_known(
    values: npt.NDArray[np.float32], item: npt.NDArray[np.int32], ts: npt.NDArray[np.int64], n: int
) -> npt.NDArray[np.float32]:
    out = np.full(n, np.nan, dtype=np.float32)
    latest = _latest_rows(~np.isnan(values), item, ts)
    out[item[latest]] = values[latest]
    return out


def _latest_rows(
    known: npt.NDArray[np.bool_], item: npt.NDArray[np.int32], ts: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Per item, the row of its latest ``known`` value by time (log order breaks ties).

    Rows are in session order, not time order, so the last row of an item need not be
    its most recent one.
    """
    rows = np.flatnonzero(known)
    rows = rows[np.lexsort((ts[rows], item[rows]))]
    last_of_item = np.ones(rows.shape[0], dtype=bool)
    last_of_item[:-1] = item[rows[1:]] != item[rows[:-1]]
    return rows[last_of_item]


def _covisitation(
    session: npt.NDArray[np.int32], item: npt.NDArray[np.int32], n_items: int, config: TableConfig
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    # A view followed by a click on the same item is one step, not two.
    keep = np.ones(item.shape[0], dtype=bool)
    keep[1:] = (item[1:] != item[:-1]) | (session[1:] != session[:-1])
    session, item = session[keep], item[keep]

    keys: list[npt.NDArray[np.int64]] = []
    weights: list[npt.NDArray[np.float32]] = []
    for distance in range(1, config.covis_distance + 1):
        same = (session[distance:] == session[:-distance]) & (item[distance:] != item[:-distance])
        a = item[:-distance][same].astype(np.int64)
        b = item[distance:][same].astype(np.int64)
        keys += [a * n_items + b, b * n_items + a]
        weight = np.full(a.shape[0], 1.0 / distance, dtype=np.float32)
        weights += [weight, weight]
    if not keys or sum(k.shape[0] for k in keys) == 0:
        return np.zeros(n_items + 1, dtype=np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    total = np.bincount(inverse, np.concatenate(weights)).astype(np.float32)
    source, target = unique // n_items, unique % n_items
    order = np.lexsort((-total, source))
    source, target, total = source[order], target[order], total[order]
    starts = np.searchsorted(source, np.arange(n_items))
    rank = np.arange(source.shape[0]) - starts[source]
    kept = rank < config.covis_neighbours
    source, target, total = source[kept], target[kept], total[kept]
    indptr = np.concatenate(([0], np.cumsum(np.bincount(source, minlength=n_items)))).astype(
        np.int64
    )
    return indptr, target.astype(np.int32), total


def _session_index(
    log: EventLog, item: npt.NDArray[np.int32], n_items: int, config: TableConfig
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int32]
]:
    """Distinct items of the most recent sessions, and the most recent sessions per item.

    Sessions are numbered by when they ended, oldest first, so "most recent" is "highest".
    """
    bounds = log.session_bounds()
    n_runs = bounds.shape[0] - 1
    run_of_row = np.repeat(np.arange(n_runs), np.diff(bounds))
    ended = log.ts[bounds[1:] - 1]
    by_end = np.argsort(ended, kind="stable")[-config.max_sessions :]
    rank = np.full(n_runs, -1, dtype=np.int64)
    rank[by_end] = np.arange(by_end.shape[0])

    row_rank = rank[run_of_row]
    indexed = row_rank >= 0
    pairs = np.unique(row_rank[indexed] * n_items + item[indexed])
    sess, items = pairs // n_items, (pairs % n_items).astype(np.int32)
    n_sessions = by_end.shape[0]
    sess_indptr = np.concatenate(([0], np.cumsum(np.bincount(sess, minlength=n_sessions)))).astype(
        np.int64
    )

    order = np.lexsort((-sess, items))  # by item, most recent session first
    by_item, sess_of = items[order], sess[order].astype(np.int32)
    starts = np.searchsorted(by_item, np.arange(n_items))
    kept = (np.arange(by_item.shape[0]) - starts[by_item]) < config.sessions_per_item
    by_item, sess_of = by_item[kept], sess_of[kept]
    item_indptr = np.concatenate(([0], np.cumsum(np.bincount(by_item, minlength=n_items)))).astype(
        np.int64
    )
    return sess_indptr, items, item_indptr, sess_of
