from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from central.errors import SplitError
from central.evaluation.baselines import ItemKNN, Popularity
from central.evaluation.replay import ReplayResult, SessionRecommender, evaluate
from central.eventlog import EventLog
from tests.central.test_split import hand_split, log_of


class ScriptedRecommender:
    """Recommends a fixed list of item names and records every call it gets."""

    name = "scripted"

    def __init__(self, recommended: Sequence[str], *, as_array: bool = False) -> None:
        self.recommended = list(recommended)
        self.as_array = as_array
        self.calls: list[str] = []
        self.asked_k: list[int] = []
        self._log: EventLog | None = None

    def fit(self, train: EventLog) -> None:
        self.calls.append("fit")

    def start_session(self) -> None:
        self.calls.append("start")

    def observe(self, log: EventLog, row: int) -> None:
        self._log = log
        self.calls.append(log.item_ids[int(log.item[row])])

    def recommend(self, k: int) -> list[int] | npt.NDArray[np.int64]:
        assert self._log is not None
        self.asked_k.append(k)
        codes = [self._log.item_ids.index(name) for name in self.recommended]
        return np.asarray(codes, dtype=np.int64) if self.as_array else codes


def test_scripted_recommender_is_a_session_recommender() -> None:
    recommender: SessionRecommender = ScriptedRecommender([])
    assert recommender.name == "scripted"


def test_replay_observes_every_event_but_the_last_and_scores_ranks() -> None:
    test = log_of([
        ("s1", "A", 0), ("s1", "B", 1), ("s1", "C", 2),
        ("s2", "C", 10), ("s2", "D", 11),
    ])
    recommender = ScriptedRecommender(["C", "B", "A"])
    result = evaluate(recommender, test, k=2)
    assert recommender.calls == ["start", "A", "B", "start", "C"]
    assert recommender.asked_k == [2, 2, 2]
    # Targets B (rank 2), C (rank 1), D (not listed).
    assert result.predictions == 3
    assert result.hr_at_k == pytest.approx(2 / 3)
    assert result.mrr_at_k == pytest.approx((1 / 2 + 1) / 3)
    assert result.name == "scripted"
    assert result.k == 2
    assert result.ms_per_prediction >= 0


def test_replay_reads_only_the_first_k_of_a_longer_list() -> None:
    test = log_of([("s1", "A", 0), ("s1", "B", 1), ("s2", "C", 2)])
    result = evaluate(ScriptedRecommender(["A", "C", "B"]), test, k=2)
    assert (result.hr_at_k, result.mrr_at_k) == (0.0, 0.0)


def test_replay_accepts_numpy_arrays() -> None:
    test = log_of([("s1", "A", 0), ("s1", "B", 1), ("s2", "C", 2)])
    result = evaluate(ScriptedRecommender(["C", "B"], as_array=True), test)
    assert (result.hr_at_k, result.mrr_at_k) == (1.0, 0.5)


def test_progress_is_told_the_predictions_of_each_session() -> None:
    test = log_of([("s1", "A", 0), ("s1", "B", 1), ("s1", "C", 2), ("s2", "A", 5),
                   ("s3", "C", 10), ("s3", "D", 11)])
    done: list[int] = []
    result = evaluate(ScriptedRecommender([]), test, progress=done.append)
    assert done == [2, 1]
    assert result.predictions == 3


def test_a_test_log_without_predictions_is_refused() -> None:
    with pytest.raises(SplitError):
        evaluate(ScriptedRecommender([]), log_of([("s1", "A", 0), ("s2", "B", 1)]))


def test_k_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        evaluate(ScriptedRecommender([]), log_of([("s1", "A", 0), ("s1", "B", 1)]), k=0)


def replay(recommender: SessionRecommender, k: int) -> ReplayResult:
    split = hand_split()
    recommender.fit(split.train)
    return evaluate(recommender, split.test, k=k)


# The hand split (see test_split) trains on A x5, C x4, B x3 and tests s7 A B C, s8 B C and
# s11 B A: four predictions with targets B, C, C, A.
@pytest.mark.parametrize(
    ("k", "hr", "mrr"),
    [(20, 1.0, (1 / 3 + 1 / 2 + 1 / 2 + 1) / 4), (2, 3 / 4, (1 / 2 + 1 / 2 + 1) / 4),
     (1, 1 / 4, 1 / 4)],
)
def test_popularity_on_the_hand_split(k: int, hr: float, mrr: float) -> None:
    result = replay(Popularity(), k)
    assert result.predictions == 4
    assert result.hr_at_k == pytest.approx(hr)
    assert result.mrr_at_k == pytest.approx(mrr)


def test_item_knn_on_the_hand_split() -> None:
    # Co-occurrence A-B 3, A-C 4, B-C 2; supports A 5, B 3, C 4; with lmbd 20 the neighbours
    # are A: C, B; B: A, C; C: A, B. Targets B after A (rank 2), C after B (rank 2, twice),
    # A after B (rank 1).
    result = replay(ItemKNN(), 20)
    assert result.hr_at_k == pytest.approx(1.0)
    assert result.mrr_at_k == pytest.approx((1 / 2 + 1 / 2 + 1 / 2 + 1) / 4)
