from __future__ import annotations

import math

import numpy as np
import pytest

from central.eventlog import build_log
from central.trainer.tables import build_tables
from protocol.candidates import CandidateConfig, Candidates, generate
from protocol.errors import FeatureContractError
from protocol.events import Event, EventType
from protocol.tables import CandidateTables
from protocol.window import SessionWindow

# Training sessions, all within the recent days:
# s1 a b c, s2 a c d, s3 b e, s4 f g f (f is the most popular of the items never near a or b).
# Co-visitation (weight 1/distance): a-b 1, b-c 1, a-c 1/2 + 1, c-d 1, a-d 1/2, b-e 1, f-g 2.
TRAINING = {"s1": "abc", "s2": "acd", "s3": "be", "s4": "fgf"}


def tables_of(sessions: dict[str, str]) -> CandidateTables:
    """Tables from sessions of views, one item per character, a second apart."""
    keys, items, ts = [], [], []
    for number, (session, session_items) in enumerate(sessions.items()):
        for position, item in enumerate(session_items):
            keys.append(session)
            items.append(item)
            ts.append(number * 100_000 + position * 1_000)
    n = len(items)
    return build_tables(build_log(keys, items, ts, [0] * n, [None] * n, [None] * n))


@pytest.fixture(scope="module")
def tables() -> CandidateTables:
    return tables_of(TRAINING)


def window_of(*events: tuple[EventType, str]) -> SessionWindow:
    """A window fed ``(type, item)`` events a second apart."""
    window = SessionWindow("q")
    for n, (event_type, item) in enumerate(events):
        window.add(Event(f"event-{n:04d}", "q", event_type, 1_000_000 + 1_000 * n, item_id=item))
    return window


def names(tables: CandidateTables, found: Candidates) -> list[str]:
    return [tables.item_ids[int(i)] for i in found.items]


def scores(tables: CandidateTables, found: Candidates, column: str) -> dict[str, float]:
    values = getattr(found, column)
    return {
        tables.item_ids[int(i)]: float(v)
        for i, v in zip(found.items, values, strict=True)
        if v != 0
    }


NO_TOP_UP = CandidateConfig(min_candidates=0)


def test_pool_holds_session_items_covis_neighbours_and_sknn_items(tables: CandidateTables) -> None:
    found = generate(window_of(("view", "b"), ("view", "a")), tables, NO_TOP_UP)
    assert sorted(names(tables, found)) == ["a", "b", "c", "d", "e"]
    assert [tables.item_ids[int(i)] for i in found.session_items] == ["a", "b"]
    assert len(found) == 5
    assert found.items.dtype == np.int32
    for column in (found.covis, found.covis_last, found.sknn):
        assert column.dtype == np.float32
        assert column.shape == found.items.shape


def test_scores_match_hand_worked_values(tables: CandidateTables) -> None:
    found = generate(window_of(("view", "b"), ("view", "a")), tables, NO_TOP_UP)

    # Recency weights 1 for a (last), 1/2 for b: covis(x) = w(a, x) + w(b, x) / 2.
    assert scores(tables, found, "covis") == pytest.approx(
        {"a": 0.5, "b": 1.0, "c": 2.0, "d": 0.5, "e": 0.5}
    )
    # With the last item alone: a's neighbours.
    assert scores(tables, found, "covis_last") == pytest.approx({"b": 1.0, "c": 1.5, "d": 0.5})
    # Session items weighted 1 - i/(n+1): a 1, b 2/3. Similarity to each neighbour session is
    # overlap / sqrt(|session| * n): s1 (a b c) 5/3 / sqrt(6), s2 (a c d) 1 / sqrt(6),
    # s3 (b e) 2/3 / sqrt(4); s4 shares nothing. An item scores its sessions' sum.
    s1, s2, s3 = 5 / 3 / math.sqrt(6), 1 / math.sqrt(6), 2 / 3 / 2
    assert scores(tables, found, "sknn") == pytest.approx(
        {"a": s1 + s2, "b": s1 + s3, "c": s1 + s2, "d": s2, "e": s3}, rel=1e-6
    )


def test_only_the_most_recent_session_items_count_for_covisitation(
    tables: CandidateTables,
) -> None:
    config = CandidateConfig(min_candidates=0, covis_recent_items=1, sknn_neighbours=0)
    found = generate(window_of(("view", "b"), ("view", "a")), tables, config)
    assert scores(tables, found, "covis") == pytest.approx({"b": 1.0, "c": 1.5, "d": 0.5})
    assert scores(tables, found, "sknn") == {}
    # e neighbours only b, which no longer counts; b stays as a session item.
    assert sorted(names(tables, found)) == ["a", "b", "c", "d"]


def test_an_item_only_neighbour_sessions_reach_is_a_candidate() -> None:
    # z is six positions from h: no co-visitation pair, but the session holds both.
    tables = tables_of({"long": "hpqrstz", "other": "xy"})
    window = window_of(("view", "h"))
    with_sknn = generate(window, tables, NO_TOP_UP)
    assert "z" in names(tables, with_sknn)
    assert "z" not in scores(tables, with_sknn, "covis")
    assert scores(tables, with_sknn, "sknn")["z"] > 0

    without = generate(window, tables, CandidateConfig(min_candidates=0, sknn_neighbours=0))
    assert sorted(names(tables, without)) == ["h", "p", "q", "r", "s", "t"]


def test_session_items_are_candidates_even_without_neighbours() -> None:
    tables = tables_of({"s1": "ab", "s2": "c", "s3": "d"})
    found = generate(window_of(("view", "c"), ("view", "d")), tables, NO_TOP_UP)
    assert sorted(names(tables, found)) == ["c", "d"]
    assert scores(tables, found, "covis") == {}


def test_a_short_session_is_topped_up_with_recent_popularity(tables: CandidateTables) -> None:
    found = generate(window_of(("view", "e")), tables, CandidateConfig(min_candidates=6))
    # e, and b from its neighbours, then by recent popularity: a, b, c and f hold two events
    # each, d, e and g one; ties keep the table order (a b c d e f g).
    assert sorted(names(tables, found)) == ["a", "b", "c", "d", "e", "f"]
    assert scores(tables, found, "covis") == pytest.approx({"b": 1.0})
    assert set(scores(tables, found, "sknn")) == {"b", "e"}


def test_a_cold_session_gets_the_most_recently_popular_items(tables: CandidateTables) -> None:
    found = generate(window_of(("view", "unknown")), tables, CandidateConfig(min_candidates=3))
    assert found.session_items.shape == (0,)
    assert [tables.item_ids[int(i)] for i in tables.recent_order] == list("abcfdeg")
    assert sorted(names(tables, found)) == ["a", "b", "c"]
    assert not found.covis.any()
    assert not found.sknn.any()


def test_an_empty_window_gets_popular_items(tables: CandidateTables) -> None:
    found = generate(SessionWindow("q"), tables, CandidateConfig(min_candidates=2))
    assert len(found) == 2


def test_bought_items_are_removed(tables: CandidateTables) -> None:
    window = window_of(("view", "b"), ("view", "a"), ("add_to_cart", "c"), ("purchase", "c"))
    found = generate(window, tables, CandidateConfig(min_candidates=20))
    assert "c" not in names(tables, found)
    assert {"a", "b", "d", "e"} <= set(names(tables, found))
    # c is still the session's latest item for scoring.
    assert tables.item_ids[int(found.session_items[0])] == "c"


def test_pool_sizes_follow_the_config(tables: CandidateTables) -> None:
    window = window_of(("view", "b"), ("view", "a"))
    found = generate(
        window, tables,
        CandidateConfig(session_items=1, covis_candidates=1, sknn_candidates=1, min_candidates=0),
    )
    # a from the session, c as the best covis item; a and c tie as the best sknn items.
    assert sorted(names(tables, found)) == ["a", "c"]


def test_pool_has_no_duplicates_and_every_item_is_known(tables: CandidateTables) -> None:
    window = window_of(("view", "a"), ("view", "b"), ("view", "a"), ("view", "c"))
    found = generate(window, tables, CandidateConfig())
    assert np.unique(found.items).shape == found.items.shape
    assert found.items.min() >= 0
    assert found.items.max() < tables.n_items
    assert len(found) == tables.n_items  # topped up with every item there is


@pytest.mark.parametrize("setting", ["session_items", "min_candidates", "sknn_neighbours"])
def test_config_rejects_out_of_range_values(setting: str) -> None:
    with pytest.raises(FeatureContractError):
        CandidateConfig(**{setting: -1})
    with pytest.raises(FeatureContractError):
        CandidateConfig(**{setting: 10_001})


def test_generation_is_deterministic(tables: CandidateTables) -> None:
    window = window_of(("view", "b"), ("view", "a"), ("click", "d"))
    first = generate(window, tables, CandidateConfig(min_candidates=4))
    second = generate(window, tables, CandidateConfig(min_candidates=4))
    for column in ("items", "covis", "covis_last", "sknn", "session_items"):
        np.testing.assert_array_equal(getattr(first, column), getattr(second, column))


def test_session_knn_keeps_the_most_similar_neighbour_sessions() -> None:
    tables = tables_of({"close": "ab", "far": "axyzw"})
    found = generate(window_of(("view", "b"), ("view", "a")), tables,
                     CandidateConfig(min_candidates=0, sknn_neighbours=1, covis_recent_items=0))
    # Only "close" (a and b) is kept; its similarity: (1 + 2/3) / sqrt(2 * 2).
    assert scores(tables, found, "sknn") == pytest.approx({"a": 5 / 6, "b": 5 / 6})
