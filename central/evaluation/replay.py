"""Next-item replay (EVALUATION.md step 4), for any recommender with the session interface.

For every test session i1..in and every t in 1..n-1 the recommender observes i_t (after
i1..i(t-1) before it), is asked for k items, and scores a hit when i(t+1) is among them,
with 1/rank added to the reciprocal-rank sum. The last event of a session is only ever a
target. HR@k and MRR@k are averages over all predictions.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from central.errors import SplitError
from central.eventlog import EventLog


class SessionRecommender(Protocol):
    name: str

    def fit(self, train: EventLog) -> None: ...

    def start_session(self) -> None:
        """A new test session begins; forget the previous one."""

    def observe(self, log: EventLog, row: int) -> None:
        """The next event of the current session is row ``row`` of ``log``."""

    def recommend(self, k: int) -> Sequence[int] | np.ndarray:
        """Up to ``k`` item codes (into ``log.item_ids``), best first."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayResult:
    name: str
    k: int
    hr_at_k: float
    mrr_at_k: float
    predictions: int
    ms_per_prediction: float  # observe plus recommend, averaged over predictions


def evaluate(
    recommender: SessionRecommender,
    test: EventLog,
    *,
    k: int = 20,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replays every session of ``test`` through a fitted ``recommender``.

    ``progress`` is called after each session with the number of predictions it made.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    bounds = test.session_bounds().tolist()
    targets = test.item
    hits = 0
    reciprocal_ranks = 0.0
    predictions = 0
    seconds = 0.0
    for start, stop in itertools.pairwise(bounds):
        if stop - start < 2:
            continue
        recommender.start_session()
        for row in range(start, stop - 1):
            began = time.perf_counter()
            recommender.observe(test, row)
            recommended = recommender.recommend(k)
            seconds += time.perf_counter() - began
            rank = _rank_of(int(targets[row + 1]), recommended, k)
            if rank:
                hits += 1
                reciprocal_ranks += 1.0 / rank
        predictions += stop - start - 1
        if progress is not None:
            progress(stop - start - 1)
    if predictions == 0:
        raise SplitError("the test log holds no session of two or more events to replay")
    return ReplayResult(
        name=recommender.name,
        k=k,
        hr_at_k=hits / predictions,
        mrr_at_k=reciprocal_ranks / predictions,
        predictions=predictions,
        ms_per_prediction=seconds * 1000.0 / predictions,
    )


def _rank_of(target: int, recommended: Sequence[int] | np.ndarray, k: int) -> int:
    """1-based position of ``target`` among the first ``k`` recommended items, 0 if absent."""
    found = np.flatnonzero(np.asarray(recommended[:k]) == target)
    return int(found[0]) + 1 if found.size else 0
