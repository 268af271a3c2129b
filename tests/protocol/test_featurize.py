from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
import pytest

from central.evaluation.proxima import ProximaRecommender
from central.eventlog import EventLog, build_log
from central.trainer.examples import build_examples
from central.trainer.tables import build_tables
from protocol.candidates import CandidateConfig, Candidates, generate
from protocol.events import Event
from protocol.features import CLOCK_COLUMNS, N_FEATURES, Column, compute
from protocol.featurize import RankCache, event_time, featurize
from protocol.serving import ServingModel
from protocol.tables import CandidateTables
from protocol.window import ADD_TO_CART, CLICK, VIEW, SessionWindow, WindowConfig
from tests.protocol.test_ranker import logistic_model

# (session, item, type, seconds into the log, category, price)
TRAINING: list[tuple[str, str, int, int, str | None, float | None]] = [
    ("s1", "a", VIEW, 0, "x", 20.0), ("s1", "b", CLICK, 5, "x", 10.0),
    ("s1", "c", VIEW, 9, "y", 25.0), ("s2", "a", VIEW, 100, "x", 20.0),
    ("s2", "c", ADD_TO_CART, 130, "y", 25.0), ("s2", "d", VIEW, 131, "y", None),
    ("s3", "b", VIEW, 200, "x", 10.0), ("s3", "e", CLICK, 260, "x", 10.0),
    ("s4", "f", VIEW, 300, "z", 5.0), ("s4", "g", VIEW, 302, None, 8.0),
    ("s4", "f", VIEW, 390, "z", 5.0),
]
# One session replayed position by position, with uneven gaps so the clock columns differ.
REPLAYED: list[tuple[str, int, int, str | None, float | None]] = [
    ("a", VIEW, 1_000, "x", 20.0), ("b", CLICK, 1_004, "x", 10.0),
    ("b", ADD_TO_CART, 1_030, "x", 10.0), ("c", VIEW, 1_095, "y", 25.0),
    ("e", VIEW, 1_096, "x", 10.0), ("d", VIEW, 1_300, "y", None),
]
CONFIG = CandidateConfig()
WINDOW = WindowConfig()


def log_of(rows: list[tuple[str, str, int, int, str | None, float | None]]) -> EventLog:
    return build_log(
        [r[0] for r in rows], [r[1] for r in rows], [1_000 * r[3] for r in rows],
        [r[2] for r in rows], [r[4] for r in rows], [r[5] for r in rows],
    )


@pytest.fixture(scope="module")
def tables() -> CandidateTables:
    return build_tables(log_of(TRAINING))


@pytest.fixture(scope="module")
def replayed() -> EventLog:
    return log_of([("q", *row) for row in REPLAYED])


def serving_model(tables: CandidateTables) -> ServingModel:
    """An edge's model over ``tables``; its scores do not matter here, its rows do."""
    model = ServingModel.from_parts(
        {}, logistic_model(n_features=N_FEATURES), "fp32", {}, tables=tables
    )
    assert model.candidate_config == CONFIG
    assert model.window_config == WINDOW
    return dataclasses.replace(model, cache=RankCache(8))


def scored_rows(
    model: ServingModel, window: SessionWindow
) -> tuple[Candidates, npt.NDArray[np.float32]]:
    """What ``rank`` scored for ``window``, read back from the model's rank cache."""
    assert model.cache is not None
    cached = model.cache.get(window)
    assert cached is not None
    return cached


def in_training_order(
    found: Candidates, matrix: npt.NDArray[np.float32], target: int
) -> npt.NDArray[np.float32]:
    """The rows of a position as training keeps them with every negative: positive first."""
    hit = found.items == target
    return matrix[np.concatenate((np.flatnonzero(hit), np.flatnonzero(~hit)))]


def test_serving_and_training_give_the_same_rows_and_replay_ranks_as_served(
    tables: CandidateTables, replayed: EventLog
) -> None:
    examples = build_examples(
        replayed, np.asarray([0], dtype=np.int64), tables,
        window_config=WINDOW, candidate_config=CONFIG, negatives=0,
    )
    assert examples.covered == len(REPLAYED) - 1
    model = serving_model(tables)
    evaluated = ProximaRecommender("proxima", dataclasses.replace(model, cache=None))
    evaluated.fit(replayed)
    evaluated.start_session()
    log_code = {item: code for code, item in enumerate(replayed.item_ids)}
    edge = SessionWindow("q", WINDOW)
    for row in range(len(REPLAYED) - 1):
        edge.add(replayed.event(row))
        # The edge keeps its windows in Redis: rank what comes back from there.
        stored = SessionWindow.from_msgpack(edge.to_msgpack(), WINDOW)
        ranking = model.rank(stored, 20, int(replayed.ts[row]))

        target = tables.item_index[replayed.item_ids[int(replayed.item[row + 1])]]
        trained = examples.features[examples.groups == row]
        served = in_training_order(*scored_rows(model, stored), target)
        assert trained.shape == (len(tables.item_ids), N_FEATURES)
        np.testing.assert_array_equal(served, trained)
        assert trained[:, Column.session_events] == pytest.approx(math.log1p(row + 1))

        evaluated.observe(replayed, row)
        named = (tables.item_ids[int(i)] for i in ranking.items)
        assert list(evaluated.recommend(20)) == [log_code[n] for n in named if n in log_code]


def test_serving_has_no_default_clock(tables: CandidateTables, replayed: EventLog) -> None:
    window = window_of(2, replayed)
    with pytest.raises(TypeError):
        serving_model(tables).rank(window, 20)  # type: ignore[call-arg]


def test_training_and_replay_use_the_time_of_the_event_just_replayed(
    tables: CandidateTables, replayed: EventLog
) -> None:
    examples = build_examples(
        replayed, np.asarray([0], dtype=np.int64), tables,
        window_config=WINDOW, candidate_config=CONFIG, negatives=0,
    )
    first_s = REPLAYED[0][2]
    for row, (_, _, at_s, _, _) in enumerate(REPLAYED[:-1]):
        ages = examples.features[examples.groups == row, Column.session_age]
        np.testing.assert_allclose(ages, math.log1p(at_s - first_s), rtol=1e-6)
        # The positive is the next item; when the session saw it, since_seen counts from
        # this event, never from the next one.
        positive = examples.features[(examples.groups == row) & (examples.labels == 1)][0]
        if positive[Column.in_session]:
            seen_s = max(s for item, _, s, _, _ in REPLAYED[: row + 1]
                         if item == REPLAYED[row + 1][0])
            assert positive[Column.since_seen] == pytest.approx(math.log1p(at_s - seen_s))


def test_event_time_is_the_window_s_last_event() -> None:
    window = SessionWindow("q")
    assert event_time(window) == 0
    window.add(Event("e-1", "q", "view", 5_000, item_id="a"))
    window.add(Event("e-2", "q", "view", 9_000, item_id="b"))
    assert event_time(window) == 9_000
    # An impression is not an event of the window: the clock stays at the last one.
    window.add(Event("e-3", "q", "impression", 12_000, item_id="b"))
    assert event_time(window) == 9_000


def window_of(events: int, replayed: EventLog) -> SessionWindow:
    window = SessionWindow("q", WINDOW)
    for row in range(events):
        window.add(replayed.event(row))
    return window


def test_a_request_after_the_last_event_ages_only_the_clock_columns(
    tables: CandidateTables, replayed: EventLog
) -> None:
    window = window_of(4, replayed)
    at_event = featurize(window, tables, CONFIG, now_ms=event_time(window)).rows()
    request = featurize(window, tables, CONFIG, now_ms=event_time(window) + 2_500).rows()
    moved = {Column(int(c)) for c in np.flatnonzero((at_event != request).any(axis=0))}
    assert moved == set(CLOCK_COLUMNS)
    np.testing.assert_allclose(
        request[:, Column.session_age], math.log1p(REPLAYED[3][2] - REPLAYED[0][2] + 2.5),
        rtol=1e-6,
    )


def test_a_request_clock_behind_the_window_counts_as_its_last_event(
    tables: CandidateTables, replayed: EventLog
) -> None:
    window = window_of(4, replayed)
    at_event = featurize(window, tables, CONFIG, now_ms=event_time(window)).rows()
    behind = featurize(window, tables, CONFIG, now_ms=event_time(window) - 60_000).rows()
    np.testing.assert_array_equal(behind, at_event)


def test_featurize_has_no_default_clock(tables: CandidateTables, replayed: EventLog) -> None:
    window = window_of(2, replayed)
    with pytest.raises(TypeError):
        featurize(window, tables, CONFIG)  # type: ignore[call-arg]


def test_featurize_composes_candidate_generation_and_the_feature_code(
    tables: CandidateTables, replayed: EventLog
) -> None:
    window = window_of(3, replayed)
    found = featurize(window, tables, CONFIG, now_ms=event_time(window) + 700)
    expected = generate(window, tables, CONFIG)
    np.testing.assert_array_equal(found.candidates.items, expected.items)
    np.testing.assert_array_equal(
        found.rows(), compute(window, expected, tables, event_time(window) + 700)
    )
    assert not found.cold


def test_a_window_of_unknown_items_is_cold(tables: CandidateTables) -> None:
    window = SessionWindow("cold")
    window.add(Event("cold-1", "cold", "view", 1_000, item_id="never-seen"))
    found = featurize(window, tables, CONFIG, now_ms=2_000)
    assert found.cold
    assert found.rows().shape == (len(found.candidates), N_FEATURES)


def test_a_cached_window_refreshes_its_clock_to_the_new_request(
    tables: CandidateTables, replayed: EventLog
) -> None:
    window = window_of(4, replayed)
    cache = RankCache(4)
    at = event_time(window)
    first = featurize(window, tables, CONFIG, now_ms=at + 1_000, cache=cache).rows().copy()
    again = featurize(window, tables, CONFIG, now_ms=at + 40_000, cache=cache)
    assert (cache.hits, cache.misses) == (1, 1)
    fresh = featurize(window, tables, CONFIG, now_ms=at + 40_000).rows()
    np.testing.assert_array_equal(again.rows(), fresh)
    np.testing.assert_array_equal(again.rows(), fresh)  # refreshed once, read twice
    assert not np.array_equal(first, fresh)


def test_a_changed_window_misses_the_cache(tables: CandidateTables, replayed: EventLog) -> None:
    window = window_of(3, replayed)
    cache = RankCache(4)
    featurize(window, tables, CONFIG, now_ms=event_time(window), cache=cache).rows()
    window.add(replayed.event(3))
    found = featurize(window, tables, CONFIG, now_ms=event_time(window), cache=cache)
    assert (cache.hits, cache.misses) == (0, 2)
    np.testing.assert_array_equal(
        found.rows(), featurize(window, tables, CONFIG, now_ms=event_time(window)).rows()
    )


def test_the_cache_keeps_the_most_recent_sessions(tables: CandidateTables) -> None:
    cache = RankCache(2)
    windows = []
    for n in range(3):
        window = SessionWindow(f"s{n}")
        window.add(Event(f"e-{n}", f"s{n}", "view", 1_000, item_id="a"))
        featurize(window, tables, CONFIG, now_ms=1_000, cache=cache).rows()
        windows.append(window)
    assert len(cache) == 2
    assert cache.get(windows[0]) is None
    assert cache.get(windows[2]) is not None
