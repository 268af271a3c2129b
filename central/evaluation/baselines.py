"""The baselines every evaluation reports (EVALUATION.md step 5).

Each follows its counterpart in the public session-rec framework (Ludewig & Jannach), so
figures can be set beside published ones:

``Popularity`` (session-rec ``Pop``)
    The k items with the most training events, the same list for every prefix.
``ItemKNN`` (session-rec ``ItemKNN``, "iknn", defaults ``n_sims=100, lmbd=20, alpha=0.5``)
    Neighbours of the last item of the prefix:
    ``sim(i, j) = c(i, j) / ((supp_i + lmbd)^alpha * (supp_j + lmbd)^(1 - alpha))``, with
    ``alpha = 0.5`` a cosine whose ``lmbd`` damps the similarity of rarely seen items.
    ``supp_i`` counts the training events of item i and ``c(i, j)`` sums, over the events
    of item i, whether the event's session holds j: ``sum over sessions of n_i * [j in s]``.
    That is what session-rec's loop computes (its ``iarray[items] += 1`` adds once per
    distinct index), so ``c`` is not symmetric when sessions repeat items; counting
    ``n_i * n_j`` instead moves MRR@20 on the diginetica sample from 0.193 to 0.181.
    Each item keeps its ``n_sims`` most similar items, never itself.
``SessionKNN`` (session-rec ``ContextKNN``, "S-KNN", with ``k=100, sample_size=500``,
``sampling='recent'``, ``similarity='cosine'``)
    Candidate neighbours are the training sessions sharing an item with the prefix; the
    ``sample_size`` most recent of them (by their last event) are compared with the prefix
    by cosine similarity of binary item vectors, the ``k`` most similar kept, and an item
    scores the sum of the similarities of the kept sessions that contain it. session-rec's
    cosine reads ``li / sqrt(la) * sqrt(lb)``, the true cosine times the prefix's size, which
    ranks identically; this is the true cosine.

Items already in the prefix are not excluded, as in session-rec. Lists hold only items
with a positive score (session-rec pads with zero-score items in arbitrary order), so
they can be shorter than k. Tied items go to the lower item code (the item met first in
the log read) and tied neighbour sessions to the one that ended later; session-rec leaves
ties to the order its sorts happen to give, so figures can differ from its own slightly.

``Covisitation`` ("covis", the bar of a dozen lines a shop will hold a ranker to)
    Neighbours: in each training session, with an item repeated at consecutive positions
    counted once, every pair of different items at most ``distance`` (5) positions apart
    adds ``1 / positions apart`` to both directions; each item keeps its ``neighbours``
    (100) heaviest. A prefix's list is its own distinct items, most recent first, then
    the neighbours of its ``recent_items`` (5) most recent distinct items, the one of rank r
    (1 = the last) weighted ``1 / r``, by summed weight, then the most popular items
    (training events). Unlike the others it fills the list to k. Ties go to the lower
    item code.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from central.eventlog import EventLog

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_NO_ITEMS: Final = np.zeros(0, dtype=np.int64)


def _top_positive(scores: FloatArray, candidates: IntArray, k: int) -> IntArray:
    """The ``k`` candidates with the highest positive score, ties to the lower item code."""
    values = scores[candidates]
    positive = values > 0
    candidates, values = candidates[positive], values[positive]
    order = np.lexsort((candidates, -values))[:k]
    return candidates[order]


def _csr_rows(indptr: IntArray, indices: IntArray, rows: IntArray) -> IntArray:
    """The column indices of ``rows`` of a CSR structure, concatenated."""
    starts, stops = indptr[rows], indptr[rows + 1]
    lengths = stops - starts
    if lengths.sum() == 0:
        return _NO_ITEMS
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return indices[offsets + np.arange(int(lengths.sum()))]


def _session_item_matrix(train: EventLog, *, binary: bool) -> sp.csr_matrix:
    """Sessions x items, holding event counts (or 1 where the session has the item)."""
    shape = (len(train.session_ids), len(train.item_ids))
    ones = np.ones(train.n_events, dtype=np.float64)
    matrix = sp.csr_matrix((ones, (train.session, train.item)), shape=shape)
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


class Popularity:
    name = "popularity"

    def __init__(self) -> None:
        self._ranked: IntArray = _NO_ITEMS

    def fit(self, train: EventLog) -> None:
        counts = np.bincount(train.item, minlength=len(train.item_ids)).astype(np.float64)
        items = np.arange(counts.shape[0], dtype=np.int64)
        self._ranked = _top_positive(counts, items, counts.shape[0])

    def start_session(self) -> None:
        pass

    def observe(self, log: EventLog, row: int) -> None:
        pass

    def recommend(self, k: int) -> IntArray:
        return self._ranked[:k]


class ItemKNN:
    name = "item-knn"

    def __init__(self, *, n_sims: int = 100, lmbd: float = 20.0, alpha: float = 0.5) -> None:
        self.n_sims = n_sims
        self.lmbd = lmbd
        self.alpha = alpha
        self._offsets: IntArray = np.zeros(1, dtype=np.int64)
        self._neighbours: IntArray = _NO_ITEMS
        self._last_item = -1

    def fit(self, train: EventLog) -> None:
        counts = _session_item_matrix(train, binary=False)
        present = _session_item_matrix(train, binary=True)
        cooccurrence = (counts.T @ present).tocsr()
        cooccurrence.setdiag(0.0)
        cooccurrence.eliminate_zeros()
        support = np.bincount(train.item, minlength=len(train.item_ids)).astype(np.float64)
        weight = support + self.lmbd
        n_items = weight.shape[0]
        offsets = np.zeros(n_items + 1, dtype=np.int64)
        neighbours: list[IntArray] = []
        for item in range(n_items):
            start, stop = cooccurrence.indptr[item], cooccurrence.indptr[item + 1]
            others = cooccurrence.indices[start:stop].astype(np.int64)
            sims = cooccurrence.data[start:stop] / (
                weight[item] ** self.alpha * weight[others] ** (1.0 - self.alpha)
            )
            order = np.lexsort((others, -sims))[: self.n_sims]
            neighbours.append(others[order])
            offsets[item + 1] = offsets[item] + order.shape[0]
        self._offsets = offsets
        self._neighbours = np.concatenate(neighbours) if neighbours else _NO_ITEMS

    def start_session(self) -> None:
        self._last_item = -1

    def observe(self, log: EventLog, row: int) -> None:
        self._last_item = int(log.item[row])

    def recommend(self, k: int) -> IntArray:
        item = self._last_item
        if not 0 <= item < self._offsets.shape[0] - 1:
            return _NO_ITEMS
        start = int(self._offsets[item])
        return self._neighbours[start : min(start + k, int(self._offsets[item + 1]))]


class SessionKNN:
    name = "session-knn"

    def __init__(self, *, k: int = 100, sample_size: int = 500) -> None:
        self.k = k
        self.sample_size = sample_size
        self._session_items: sp.csr_matrix = sp.csr_matrix((0, 0))
        self._item_sessions: sp.csr_matrix = sp.csr_matrix((0, 0))
        self._session_size: FloatArray = np.zeros(0)
        self._session_last_ts: IntArray = _NO_ITEMS
        self._prefix: set[int] = set()

    def fit(self, train: EventLog) -> None:
        binary = _session_item_matrix(train, binary=True)
        self._session_items = binary
        self._item_sessions = binary.T.tocsr()
        self._session_size = np.diff(binary.indptr).astype(np.float64)
        last_ts = np.full(len(train.session_ids), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last_ts, train.session, train.ts)
        self._session_last_ts = last_ts

    def start_session(self) -> None:
        self._prefix = set()

    def observe(self, log: EventLog, row: int) -> None:
        item = int(log.item[row])
        if 0 <= item < self._item_sessions.shape[0]:
            self._prefix.add(item)

    def recommend(self, k: int) -> IntArray:
        if not self._prefix:
            return _NO_ITEMS
        neighbours, similarity = self._neighbours()
        items = self._session_items
        scores: FloatArray = np.asarray(
            np.bincount(
                _csr_rows(items.indptr, items.indices, neighbours),
                weights=np.repeat(similarity, np.diff(items.indptr)[neighbours]),
                minlength=items.shape[1],
            ),
            dtype=np.float64,
        )
        return _top_positive(scores, np.flatnonzero(scores), k)

    def _neighbours(self) -> tuple[IntArray, FloatArray]:
        """The ``k`` most similar sampled sessions and their cosine similarity to the prefix."""
        by_item = self._item_sessions
        prefix = np.fromiter(self._prefix, dtype=np.int64, count=len(self._prefix))
        hits = _csr_rows(by_item.indptr, by_item.indices, prefix)
        candidates, overlap = np.unique(hits, return_counts=True)
        if candidates.shape[0] > self.sample_size:
            recent = np.lexsort((candidates, -self._session_last_ts[candidates]))
            recent = recent[: self.sample_size]
            candidates, overlap = candidates[recent], overlap[recent]
        similarity = overlap / (np.sqrt(self._session_size[candidates]) * np.sqrt(prefix.size))
        best = np.lexsort((candidates, -self._session_last_ts[candidates], -similarity))
        best = best[: self.k]
        return candidates[best], similarity[best]


class Covisitation:
    name = "covis"

    def __init__(self, *, distance: int = 5, neighbours: int = 100, recent_items: int = 5) -> None:
        self.distance = distance
        self.neighbours = neighbours
        self.recent_items = recent_items
        self._offsets: IntArray = np.zeros(1, dtype=np.int64)
        self._targets: IntArray = _NO_ITEMS
        self._weights: FloatArray = np.zeros(0)
        self._popular: IntArray = _NO_ITEMS
        self._recent: list[int] = []  # the prefix's distinct items, most recent first

    def fit(self, train: EventLog) -> None:
        n_items = len(train.item_ids)
        session, item = train.session, train.item.astype(np.int64)
        step = np.ones(item.shape[0], dtype=bool)
        step[1:] = (item[1:] != item[:-1]) | (session[1:] != session[:-1])
        session, item = session[step], item[step]
        keys: list[IntArray] = []
        weights: list[FloatArray] = []
        for apart in range(1, self.distance + 1):
            pair = (session[apart:] == session[:-apart]) & (item[apart:] != item[:-apart])
            a, b = item[:-apart][pair], item[apart:][pair]
            keys += [a * n_items + b, b * n_items + a]
            weights += [np.full(2 * a.shape[0], 1.0 / apart)]
        unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
        total = np.bincount(inverse, np.concatenate(weights))
        source, target = unique // n_items, unique % n_items
        order = np.lexsort((target, -total, source))
        source, target, total = source[order], target[order], total[order]
        starts = np.searchsorted(source, np.arange(n_items))
        kept = np.arange(source.shape[0]) - starts[source] < self.neighbours
        self._targets = target[kept]
        self._weights = total[kept].astype(np.float64)
        self._offsets = np.concatenate(
            ([0], np.cumsum(np.bincount(source[kept], minlength=n_items)))
        ).astype(np.int64)
        counts = np.bincount(train.item, minlength=n_items).astype(np.float64)
        self._popular = _top_positive(counts, np.arange(n_items, dtype=np.int64), n_items)

    def start_session(self) -> None:
        self._recent = []

    def observe(self, log: EventLog, row: int) -> None:
        item = int(log.item[row])
        if not 0 <= item < self._offsets.shape[0] - 1:
            return
        if item in self._recent:
            self._recent.remove(item)
        self._recent.insert(0, item)

    def recommend(self, k: int) -> IntArray:
        if not self._recent:
            return _NO_ITEMS
        own = np.asarray(self._recent, dtype=np.int64)
        recent = own[: self.recent_items]
        rows = _csr_rows(self._offsets, np.arange(self._targets.shape[0]), recent)
        lengths = np.diff(self._offsets)[recent]
        rank_weight = np.repeat(1.0 / np.arange(1, recent.shape[0] + 1), lengths)
        scores: FloatArray = np.bincount(
            self._targets[rows],
            self._weights[rows] * rank_weight,
            minlength=self._offsets.shape[0] - 1,
        ).astype(np.float64)
        scores[own] = 0.0
        neighbours = _top_positive(scores, np.flatnonzero(scores), k)
        chosen = np.concatenate((own, neighbours))[:k]
        if chosen.shape[0] < k:
            extra = self._popular[: k + chosen.shape[0]]
            extra = extra[~np.isin(extra, chosen)]
            chosen = np.concatenate((chosen, extra))[:k]
        return chosen
