from __future__ import annotations

import math

import numpy as np
import pytest

from central.datasets import LogFormat, read_log
from central.evaluation.baselines import Covisitation, ItemKNN, Popularity, SessionKNN
from central.evaluation.replay import SessionRecommender, evaluate
from central.evaluation.split import Split, prepare
from central.eventlog import EventLog
from tests.central.test_split import log_of, shared_data_file, shared_split


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


# Training sessions for the co-visitation heuristic; item codes follow first appearance.
COVIS_ROWS: list[tuple[str, str, int]] = [
    ("t1", "A", 0), ("t1", "B", 1), ("t1", "C", 2), ("t1", "D", 3),
    ("t2", "E", 4), ("t2", "A", 5),
    ("t3", "F", 6), ("t3", "F", 7), ("t3", "F", 8),
    ("q", "A", 9), ("q", "B", 10), ("q", "A", 11),
]


def test_covis_puts_the_session_items_first_then_weighted_neighbours_then_popularity() -> None:
    recommender = Covisitation()
    log, query = fitted_on(recommender, COVIS_ROWS)
    # From A: B 1 and E 1 (1 position apart; the tie to the lower code), C 1/2, D 1/3; F has
    # no neighbour (its repeats are one step) and tops the list up as the most popular.
    assert after(recommender, log, query[:1], 20) == ["A", "B", "E", "C", "D", "F"]
    # Prefix A B: own items most recent first; B's neighbours weigh 1, A's 1/2: C 1 + 1/4,
    # D 1/2 + 1/6, E 1/2.
    assert after(recommender, log, query[1:2], 20) == ["B", "A", "C", "D", "E", "F"]
    # A seen again moves to the front; B is now of rank 2: C 1/2 + 1/2, E 1, D 1/3 + 1/4.
    assert after(recommender, log, query[2:], 3) == ["A", "B", "C"]


def test_covis_counts_an_item_repeated_at_consecutive_positions_as_one_step() -> None:
    # P Q Q Q Q R: R is 2 steps from P (1/2), not 5 (1/5); S is 3 from P (1/3).
    rows = [("t1", "P", 0), ("t1", "Q", 1), ("t1", "Q", 2), ("t1", "Q", 3), ("t1", "Q", 4),
            ("t1", "R", 5), ("t2", "P", 6), ("t2", "X", 7), ("t2", "Y", 8), ("t2", "S", 9),
            ("q", "P", 10)]
    recommender = Covisitation()
    log, query = fitted_on(recommender, rows)
    # Q 1, X 1, R 1/2 and Y 1/2 (ties to the lower code), S 1/3; R would trail S at 1/5.
    assert after(recommender, log, query, 20) == ["P", "Q", "X", "R", "Y", "S"]


def test_covis_keeps_the_heaviest_neighbours_and_fills_the_list_from_popularity() -> None:
    recommender = Covisitation(neighbours=1)
    log, query = fitted_on(recommender, COVIS_ROWS)
    assert after(recommender, log, query[:1], 4) == ["A", "B", "F", "C"]
    recommender.start_session()
    assert names(log, recommender.recommend(20)) == []


def test_covis_matches_the_figures_of_the_shop_log_issue() -> None:
    # yoochoose-100k, 1 test day: HR@20 0.661, MRR@20 0.365 as measured when the bar was
    # set; ties (to the lower item code here) move MRR by a few thousandths.
    log, _ = read_log(shared_data_file("yoochoose-100k-train.csv"), "csv")
    split = prepare(log, test_days=1)
    recommender = Covisitation()
    recommender.fit(split.train)
    result = evaluate(recommender, split.test, k=20)
    assert result.predictions == 12_211
    assert math.isclose(result.hr_at_k, 0.661, abs_tol=TOLERANCE), result
    assert math.isclose(result.mrr_at_k, 0.365, abs_tol=TOLERANCE), result
