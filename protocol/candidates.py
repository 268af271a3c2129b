"""Candidate generation: which items the ranker scores for a session.

The pool is the union of
* the session's own most recent items (people often go back to what they viewed; the
  ranker learns from the data whether to surface them),
* co-visitation neighbours of the last few session items, weighted by recency,
* items of the nearest neighbour sessions (session-kNN, cosine on item sets with the
  session's items weighted by recency),
topped up with recently popular items to a minimum size; bought items are removed.
The scores computed on the way are kept: the features reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from protocol.errors import FeatureContractError
from protocol.tables import CandidateTables, Floats, Ints
from protocol.window import SessionWindow

_EMPTY_INTS: Final = np.zeros(0, dtype=np.int32)
_EMPTY_FLOATS: Final = np.zeros(0, dtype=np.float32)
_EMPTY_INDEX: Final = np.zeros(0, dtype=np.intp)
_DENSE_FACTOR: Final = 8
_DENSE_FLOOR: Final = 4096


@dataclass(frozen=True, slots=True)
class CandidateConfig:
    session_items: int = 20
    covis_recent_items: int = 5
    covis_candidates: int = 100
    sknn_neighbours: int = 100
    sknn_sample: int = 1000  # most recent sessions sampled, shared out over the session's items
    sknn_candidates: int = 100
    min_candidates: int = 100

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 10_000:
                raise FeatureContractError(f"candidate setting {name} must be 0-10000", field=name)


@dataclass(frozen=True, slots=True)
class Candidates:
    items: Ints  # item indices into the tables
    covis: Floats  # recency-weighted co-visitation score
    covis_last: Floats  # co-visitation with the last item alone
    sknn: Floats  # summed similarity of the neighbour sessions holding the item
    session_items: Ints  # the window's known items, most recent first
    session_rows: npt.NDArray[np.intp]  # rows of ``items`` that are session items
    session_ranks: npt.NDArray[np.intp]  # for each of those rows, its index in session_items

    def __len__(self) -> int:
        return int(self.items.shape[0])


def session_item_indices(window: SessionWindow, tables: CandidateTables) -> Ints:
    index = tables.item_index
    known = [index[item] for item in window.recent_items() if item in index]
    return np.asarray(known, dtype=np.int32) if known else _EMPTY_INTS


def generate(window: SessionWindow, tables: CandidateTables, config: CandidateConfig) -> Candidates:
    session = session_item_indices(window, tables)
    covis_items, covis_scores, last_items, last_scores = _covisitation(session, tables, config)
    sknn_items, sknn_scores = _session_knn(session, tables, config)

    pool = np.concatenate(
        (
            session[: config.session_items],
            _top(covis_items, covis_scores, config.covis_candidates),
            _top(sknn_items, sknn_scores, config.sknn_candidates),
        )
    )
    pool = np.unique(pool)
    if pool.shape[0] < config.min_candidates:
        pool = _top_up(pool, tables, config.min_candidates)
    if window.bought:
        bought = [tables.item_index[i] for i in window.bought if i in tables.item_index]
        if bought:
            pool = pool[~np.isin(pool, np.asarray(bought, dtype=np.int32))]
    rows, ranks = session_rows(pool, session)
    return Candidates(
        items=pool,
        covis=_lookup(covis_items, covis_scores, pool),
        covis_last=_lookup(last_items, last_scores, pool),
        sknn=_lookup(sknn_items, sknn_scores, pool),
        session_items=session,
        session_rows=rows,
        session_ranks=ranks,
    )


def session_rows(pool: Ints, session: Ints) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Rows of the pool that are session items, and each one's recency rank."""
    if session.shape[0] == 0 or pool.shape[0] == 0:
        return _EMPTY_INDEX, _EMPTY_INDEX
    order = np.argsort(session)
    sorted_session = session[order]
    position = np.searchsorted(sorted_session, pool)
    position[position == sorted_session.shape[0]] = 0
    rows = np.flatnonzero(sorted_session[position] == pool)
    return rows, order[position[rows]]


def _covisitation(
    session: Ints, tables: CandidateTables, config: CandidateConfig
) -> tuple[Ints, Floats, Ints, Floats]:
    recent = session[: config.covis_recent_items]
    if recent.shape[0] == 0:
        return _EMPTY_INTS, _EMPTY_FLOATS, _EMPTY_INTS, _EMPTY_FLOATS
    rows, lengths = _gather(tables.covis_indptr, recent)
    neighbours = tables.covis_indices[rows]
    weights = tables.covis_weights[rows]
    recency = np.repeat(1.0 / np.arange(1, recent.shape[0] + 1, dtype=np.float32), lengths)
    items, scores = _accumulate(neighbours, weights * recency, tables.n_items)
    n_last = int(lengths[0])
    last_items, last_scores = neighbours[:n_last], weights[:n_last]
    order = np.argsort(last_items, kind="stable")
    return items, scores, last_items[order], last_scores[order]


def _session_knn(
    session: Ints, tables: CandidateTables, config: CandidateConfig
) -> tuple[Ints, Floats]:
    if session.shape[0] == 0 or config.sknn_neighbours == 0 or tables.n_sessions == 0:
        return _EMPTY_INTS, _EMPTY_FLOATS
    n = session.shape[0]
    quota = max(1, config.sknn_sample // n)
    rows, lengths = _gather(tables.item_sess_indptr, session, quota)
    if rows.shape[0] == 0:
        return _EMPTY_INTS, _EMPTY_FLOATS
    # Linear recency decay over the session's items, as in V-SKNN.
    weights = np.repeat(1.0 - np.arange(n, dtype=np.float32) / (n + 1), lengths)
    sessions, overlap = _accumulate(tables.item_sess[rows], weights, tables.n_sessions)
    similarity = overlap / np.sqrt(tables.sess_len[sessions] * np.float32(n))
    if sessions.shape[0] > config.sknn_neighbours:
        keep = np.argpartition(-similarity, config.sknn_neighbours - 1)[: config.sknn_neighbours]
        sessions, similarity = sessions[keep], similarity[keep]
    item_rows, item_lengths = _gather(tables.sess_indptr, sessions)
    return _accumulate(
        tables.sess_items[item_rows], np.repeat(similarity, item_lengths), tables.n_items
    )


def _gather(
    indptr: npt.NDArray[np.int64], keys: Ints, cap: int | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row positions of the CSR rows ``keys`` (each cut to its first ``cap``), concatenated,
    and each row's length."""
    starts = indptr[keys]
    lengths = indptr[keys + 1] - starts
    if cap is not None:
        lengths = np.minimum(lengths, cap)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), lengths
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total, dtype=np.int64), lengths


def _accumulate(keys: Ints, weights: npt.NDArray[np.floating], n_keys: int) -> tuple[Ints, Floats]:
    """Sums ``weights`` per distinct key of ``0..n_keys-1``; keys come back sorted.

    Counting into a dense array is linear and beats sorting while the key space is small
    relative to the keys; past that, sorting is cheaper than touching every slot.
    """
    if keys.shape[0] == 0:
        return _EMPTY_INTS, _EMPTY_FLOATS
    if n_keys <= _DENSE_FACTOR * keys.shape[0] + _DENSE_FLOOR:
        totals = np.bincount(keys, weights, minlength=n_keys)
        unique = np.flatnonzero(totals)
        return unique.astype(np.int32), totals[unique].astype(np.float32)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique.astype(np.int32, copy=False), np.bincount(inverse, weights).astype(np.float32)


def _top(items: Ints, scores: Floats, n: int) -> Ints:
    if items.shape[0] <= n:
        return items
    return items[np.argpartition(-scores, n - 1)[:n]]


def _top_up(pool: Ints, tables: CandidateTables, size: int) -> Ints:
    popular = tables.recent_order[: size + pool.shape[0]]
    extra = popular[~np.isin(popular, pool)][: size - pool.shape[0]]
    return np.concatenate((pool, extra)) if extra.shape[0] else pool


def _lookup(sorted_keys: Ints, values: Floats, query: Ints) -> Floats:
    """``values`` of ``query`` keys found in ``sorted_keys``, 0 elsewhere."""
    if sorted_keys.shape[0] == 0:
        return np.zeros(query.shape[0], dtype=np.float32)
    position = np.searchsorted(sorted_keys, query)
    position[position == sorted_keys.shape[0]] = 0
    found = sorted_keys[position] == query
    return np.where(found, values[position], np.float32(0)).astype(np.float32, copy=False)
