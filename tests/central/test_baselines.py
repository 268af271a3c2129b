from __future__ import annotations

import math

import numpy as np
import pytest

from central.datasets import LogFormat
from central.evaluation.baselines import ItemKNN, Popularity, SessionKNN
from central.evaluation.replay import SessionRecommender, evaluate
from central.evaluation.split import Split
from central.eventlog import EventLog
from tests.central.test_split import log_of, shared_split


def fitted_on(
    recommender: SessionRecommender, rows: list[tuple[str, str, int]], query: str = "q"
) -> tuple[EventLog, list[int]]:
    """Fits on every session but ``query`` and returns the log and the query's rows."""
    log = log_of(rows)
    is_query = np.asarray(log.session_ids)[log.session] == query
    recommender.fit(log.select(~is_query))
    recommender.start_session()
    return log, np.flatnonzero(is_query).tolist()


def names(log: EventLog, codes: object) -> list[str]:
    return [log.item_ids[int(code)] for code in np.asarray(codes).tolist()]


def after(recommender: SessionRecommender, log: EventLog, rows: list[int], k: int) -> list[str]:
    for row in rows:
        recommender.observe(log, row)
    return names(log, recommender.recommend(k))


def test_popularity_ranks_by_training_events_ties_to_the_item_seen_first() -> None:
    rows = [("t1", "A", 0), ("t1", "B", 1), ("t2", "C", 2), ("t2", "B", 3), ("t3", "C", 4),
            ("t3", "D", 5), ("q", "D", 9), ("q", "E", 10)]
    recommender = Popularity()
    log, query = fitted_on(recommender, rows)
    assert after(recommender, log, query[:1], 3) == ["B", "C", "A"]
    assert after(recommender, log, query[1:], 20) == ["B", "C", "A", "D"]


def test_item_knn_counts_co_occurrence_per_event_of_the_given_item() -> None:
    # With lmbd 0: from B, c(B, A) = 1 (one B event, in a session holding A) over
    # sqrt(supp_B 2 * supp_A 2), and c(B, C) = 1 over sqrt(2 * 1); C comes first.
    # Counting n_B * n_A = 2 instead would put A first.
    rows = [("t1", "B", 0), ("t1", "A", 1), ("t1", "A", 2), ("t2", "B", 3), ("t2", "C", 4),
            ("q", "B", 9), ("q", "A", 10)]
    recommender = ItemKNN(lmbd=0)
    log, query = fitted_on(recommender, rows)
    assert after(recommender, log, query[:1], 20) == ["C", "A"]
    # From A: c(A, B) = 2 over sqrt(2 * 2); A itself is never its own neighbour.
    assert after(recommender, log, query[1:], 20) == ["B"]


def test_item_knn_keeps_n_sims_neighbours_and_follows_the_last_item_only() -> None:
    rows = [("t1", "A", 0), ("t1", "B", 1), ("t1", "C", 2), ("t1", "D", 3),
            ("t2", "E", 4), ("t2", "F", 5), ("q", "A", 9), ("q", "E", 10)]
    recommender = ItemKNN(n_sims=2)
    log, query = fitted_on(recommender, rows)
    assert after(recommender, log, query[:1], 20) == ["B", "C"]
    assert after(recommender, log, query[1:], 20) == ["F"]
    recommender.start_session()
    assert names(log, recommender.recommend(20)) == []


# Training sessions for S-KNN, each ending later than the one before: t4 shares nothing.
SKNN_ROWS: list[tuple[str, str, int]] = [
    ("t1", "A", 1000), ("t1", "B", 1001),
    ("t2", "A", 2000), ("t2", "C", 2001), ("t2", "D", 2002),
    ("t3", "A", 3000), ("t3", "C", 3001),
    ("t4", "E", 4000), ("t4", "F", 4001),
    ("q", "A", 5000), ("q", "B", 5001),
]


def test_session_knn_scores_items_by_summed_cosine_of_neighbour_sessions() -> None:
    recommender = SessionKNN()
    log, query = fitted_on(recommender, SKNN_ROWS)
    # Prefix {A}: t1 and t3 have cosine 1/sqrt(2), t2 1/sqrt(3); so A 1.99, C 1.28, B 0.71,
    # D 0.58. Items of the prefix are not excluded.
    assert after(recommender, log, query[:1], 20) == ["A", "C", "B", "D"]
    # Prefix {A, B}: t1 has 2/sqrt(2*2) = 1, t3 1/2, t2 1/sqrt(6); A 1.91, B 1, C 0.91, D 0.41.
    assert after(recommender, log, query[1:], 20) == ["A", "B", "C", "D"]


def test_session_knn_samples_the_most_recent_candidate_sessions() -> None:
    recommender = SessionKNN(sample_size=2)
    log, query = fitted_on(recommender, SKNN_ROWS)
    # Candidates for {A} are t1, t2, t3; the two most recent, t3 and t2, leave B out.
    assert after(recommender, log, query[:1], 20) == ["A", "C", "D"]


def test_session_knn_keeps_k_neighbours_ties_to_the_most_recent() -> None:
    recommender = SessionKNN(k=1)
    log, query = fitted_on(recommender, SKNN_ROWS)
    # t1 and t3 tie at 1/sqrt(2); t3 ended later.
    assert after(recommender, log, query[:1], 20) == ["A", "C"]
    assert after(recommender, log, query[1:], 1) == ["A"]


def test_session_knn_recommends_nothing_before_the_first_event() -> None:
    recommender = SessionKNN()
    log, _ = fitted_on(recommender, SKNN_ROWS)
    assert names(log, recommender.recommend(20)) == []


# Public figures (session-rec, EVALUATION.md, 7 test days): HR@20 and MRR@20. The tolerance
# allows for tie order, which session-rec leaves to its sort (see central.evaluation.baselines);
# on these logs every tie order tried stays well within it.
PUBLIC_FIGURES: dict[str, dict[str, tuple[float, float]]] = {
    "diginetica-sample.csv": {
        "popularity": (0.078, 0.009), "item-knn": (0.333, 0.193), "session-knn": (0.882, 0.510),
    },
    "movielens-100k.csv": {
        "popularity": (0.064, 0.014), "item-knn": (0.190, 0.041), "session-knn": (0.108, 0.015),
    },
}
TOLERANCE = 0.006
FORMATS: dict[str, LogFormat] = {"diginetica-sample.csv": "diginetica",
                                 "movielens-100k.csv": "csv"}


@pytest.fixture(scope="module", params=sorted(PUBLIC_FIGURES))
def shared(request: pytest.FixtureRequest) -> tuple[str, Split]:
    name = str(request.param)
    return name, shared_split(name, FORMATS[name])


@pytest.mark.parametrize("make", [Popularity, ItemKNN, SessionKNN])
def test_baselines_come_close_to_the_public_figures(
    shared: tuple[str, Split], make: type[Popularity | ItemKNN | SessionKNN]
) -> None:
    name, split = shared
    recommender = make()
    recommender.fit(split.train)
    result = evaluate(recommender, split.test, k=20)
    public_hr, public_mrr = PUBLIC_FIGURES[name][recommender.name]
    assert result.predictions == split.predictions
    assert math.isclose(result.hr_at_k, public_hr, abs_tol=TOLERANCE), result
    assert math.isclose(result.mrr_at_k, public_mrr, abs_tol=TOLERANCE), result
