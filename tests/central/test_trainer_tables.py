from __future__ import annotations

import math

import numpy as np
import pytest

from central.errors import TrainingError
from central.eventlog import EventLog, build_log
from central.trainer.tables import DAY_MS, TableConfig, build_tables
from protocol.events import EVENT_TYPE_CODES
from protocol.tables import TABLES_PREFIX, CandidateTables

# session, item, ms, event type, category, price
Row = tuple[str, str, int, str, str | None, float | None]


def log_of(rows: list[Row]) -> EventLog:
    return build_log(
        [row[0] for row in rows],
        [row[1] for row in rows],
        [row[2] for row in rows],
        [EVENT_TYPE_CODES[row[3]] for row in rows],
        [row[4] for row in rows],
        [row[5] for row in rows],
    )


def views(session: str, items: str, start_ms: int) -> list[Row]:
    """One view per character of ``items``, a second apart."""
    return [
        (session, item, start_ms + 1000 * n, "view", None, None) for n, item in enumerate(items)
    ]


def neighbours(tables: CandidateTables, item: str) -> list[tuple[str, float]]:
    row = tables.item_index[item]
    start, stop = int(tables.covis_indptr[row]), int(tables.covis_indptr[row + 1])
    return [
        (tables.item_ids[int(target)], round(float(weight), 6))
        for target, weight in zip(
            tables.covis_indices[start:stop], tables.covis_weights[start:stop], strict=True
        )
    ]


# Co-visitation worked out by hand (pairs up to 5 positions apart, weight 1/distance):
# s1 "aabca" collapses to a b c a: a-b 1 + 1/2, b-c 1, a-c 1/2 + 1 (a-a is no pair);
# s2 "bd": b-d 1; s4 "ac": a-c 1; s3 "epqrstu": e-p 1, e-q 1/2, e-r 1/3, e-s 1/4, e-t 1/5,
# and e-u, six positions apart, is no pair.
COVIS_ROWS = (
    views("s1", "aabca", 0)
    + views("s2", "bd", 100_000)
    + views("s3", "epqrstu", 200_000)
    + views("s4", "ac", 300_000)
)


def test_covisitation_neighbours_and_weights_are_exact() -> None:
    tables = build_tables(log_of(COVIS_ROWS), TableConfig(covis_distance=5))

    assert neighbours(tables, "a") == [("c", 2.5), ("b", 1.5)]
    # c and d tie at 1; ties keep the table order, where c comes first.
    assert neighbours(tables, "b") == [("a", 1.5), ("c", 1.0), ("d", 1.0)]
    assert neighbours(tables, "c") == [("a", 2.5), ("b", 1.0)]
    assert neighbours(tables, "d") == [("b", 1.0)]
    assert neighbours(tables, "e") == [("p", 1.0), ("q", 0.5), ("r", 0.333333), ("s", 0.25),
                                       ("t", 0.2)]
    assert neighbours(tables, "t") == [("s", 1.0), ("u", 1.0), ("r", 0.5), ("q", 0.333333),
                                       ("p", 0.25), ("e", 0.2)]
    assert "u" not in [item for item, _ in neighbours(tables, "e")]


def test_covisitation_is_symmetric() -> None:
    tables = build_tables(log_of(COVIS_ROWS), TableConfig(covis_distance=5))
    weights = {
        (item, other): weight
        for item in tables.item_ids
        for other, weight in neighbours(tables, item)
    }
    assert weights
    for (item, other), weight in weights.items():
        assert weights[(other, item)] == weight


def test_consecutive_repeats_of_one_item_are_one_step() -> None:
    # A view then a click on the same item, then the next item: one step apart, weight 1.
    rows: list[Row] = [
        ("s", "a", 0, "view", None, None),
        ("s", "a", 1, "click", None, None),
        ("s", "a", 2, "view", None, None),
        ("s", "b", 3, "view", None, None),
    ]
    tables = build_tables(log_of(rows))
    assert neighbours(tables, "a") == [("b", 1.0)]
    assert neighbours(tables, "b") == [("a", 1.0)]


def test_covisitation_distance_setting_limits_the_pairs() -> None:
    tables = build_tables(log_of(views("s", "abcd", 0)), TableConfig(covis_distance=2))
    assert neighbours(tables, "a") == [("b", 1.0), ("c", 0.5)]
    assert neighbours(tables, "d") == [("c", 1.0), ("b", 0.5)]


def test_each_item_keeps_its_best_neighbours_up_to_the_cap() -> None:
    tables = build_tables(log_of(COVIS_ROWS), TableConfig(covis_neighbours=2))
    assert neighbours(tables, "b") == [("a", 1.5), ("c", 1.0)]
    assert neighbours(tables, "e") == [("p", 1.0), ("q", 0.5)]
    assert neighbours(tables, "d") == [("b", 1.0)]
    assert int(np.diff(tables.covis_indptr).max()) == 2


def test_an_item_never_neighbours_itself() -> None:
    tables = build_tables(log_of(views("s", "abab", 0) + views("t", "aab", 10_000)))
    for item in tables.item_ids:
        assert item not in [other for other, _ in neighbours(tables, item)]


def test_popularity_counts_every_event_overall_and_in_the_recent_days() -> None:
    day = DAY_MS
    rows: list[Row] = [
        ("old", "a", 0, "view", None, None),
        ("old", "a", 1, "click", None, None),
        ("old", "b", 2, "view", None, None),
        ("new", "b", 10 * day, "view", None, None),
        ("new", "c", 10 * day + 1, "view", None, None),
        ("new", "c", 10 * day + 2, "add_to_cart", None, None),
        # Exactly 7 days before the last event still counts as recent.
        ("edge", "a", 10 * day + 2 - 7 * day, "view", None, None),
    ]
    tables = build_tables(log_of(rows), TableConfig(recent_days=7.0))
    pop_all = {item: float(tables.pop_all[tables.item_index[item]]) for item in "abc"}
    pop_recent = {item: float(tables.pop_recent[tables.item_index[item]]) for item in "abc"}
    assert pop_all == {"a": 3.0, "b": 2.0, "c": 2.0}
    assert pop_recent == {"a": 1.0, "b": 1.0, "c": 2.0}
    assert tables.pop_all.dtype == np.float32


def test_recent_order_ranks_recent_popularity_and_breaks_ties_by_overall() -> None:
    day = DAY_MS
    rows = views("old", "aab", 0) + views("new", "bcc", 30 * day)
    tables = build_tables(log_of(rows), TableConfig(recent_days=1.0))
    # c: recent 2; b: recent 1, overall 2; a: recent 0.
    assert [tables.item_ids[i] for i in tables.recent_order] == ["c", "b", "a"]


def test_items_keep_their_last_known_category_and_price() -> None:
    day = DAY_MS
    # The later session is listed first, so log order and time order disagree.
    rows: list[Row] = [
        ("late", "a", 5 * day, "view", "shoes", 12.0),
        ("late", "a", 5 * day + 1, "click", None, None),  # unknown does not erase
        ("late", "b", 5 * day + 2, "view", None, None),
        ("early", "a", 1 * day, "view", "boots", 10.0),
        ("early", "b", 1 * day + 1, "view", "hats", 3.5),
        ("early", "c", 1 * day + 2, "view", None, None),
    ]
    tables = build_tables(log_of(rows))

    def category(item: str) -> str | None:
        code = int(tables.category[tables.item_index[item]])
        return tables.categories[code] if code >= 0 else None

    def price(item: str) -> float:
        return float(tables.price[tables.item_index[item]])

    assert category("a") == "shoes"
    assert price("a") == 12.0
    assert category("b") == "hats"
    assert price("b") == 3.5
    assert category("c") is None
    assert math.isnan(price("c"))
    # Only categories some item holds are in the vocabulary.
    assert sorted(tables.categories) == ["hats", "shoes"]


def session_items(tables: CandidateTables, session: int) -> list[str]:
    start, stop = int(tables.sess_indptr[session]), int(tables.sess_indptr[session + 1])
    return sorted(tables.item_ids[int(i)] for i in tables.sess_items[start:stop])


def sessions_of(tables: CandidateTables, item: str) -> list[int]:
    row = tables.item_index[item]
    start, stop = int(tables.item_sess_indptr[row]), int(tables.item_sess_indptr[row + 1])
    return [int(s) for s in tables.item_sess[start:stop]]


# Listed out of time order; by end time they are s2 (ends 50 s), s3 (60 s), s1 (90 s), s4 (200 s).
SESSION_ROWS = (
    views("s1", "abca", 87_000)
    + views("s2", "ab", 49_000)
    + views("s3", "bd", 59_000)
    + views("s4", "ae", 199_000)
)


def test_sessions_are_numbered_by_end_time_with_their_distinct_items() -> None:
    tables = build_tables(log_of(SESSION_ROWS))
    assert tables.n_sessions == 4
    assert [session_items(tables, s) for s in range(4)] == [
        ["a", "b"], ["b", "d"], ["a", "b", "c"], ["a", "e"],
    ]
    assert tables.sess_len.tolist() == [2.0, 2.0, 3.0, 2.0]


def test_each_item_lists_its_most_recent_sessions_first() -> None:
    tables = build_tables(log_of(SESSION_ROWS))
    assert sessions_of(tables, "a") == [3, 2, 0]
    assert sessions_of(tables, "b") == [2, 1, 0]
    assert sessions_of(tables, "c") == [2]
    assert sessions_of(tables, "e") == [3]


def test_session_index_caps_sessions_per_item_and_indexed_sessions() -> None:
    per_item = build_tables(log_of(SESSION_ROWS), TableConfig(sessions_per_item=2))
    assert sessions_of(per_item, "a") == [3, 2]
    assert sessions_of(per_item, "b") == [2, 1]
    assert per_item.n_sessions == 4

    newest = build_tables(log_of(SESSION_ROWS), TableConfig(max_sessions=2))
    # Only s1 and s4 are indexed, renumbered 0 and 1; d's only session is left out.
    assert newest.n_sessions == 2
    assert [session_items(newest, s) for s in range(2)] == [["a", "b", "c"], ["a", "e"]]
    assert sessions_of(newest, "a") == [1, 0]
    assert sessions_of(newest, "d") == []


def test_an_empty_log_is_refused() -> None:
    empty = log_of(COVIS_ROWS).select(np.zeros(len(COVIS_ROWS), dtype=bool))
    with pytest.raises(TrainingError):
        build_tables(empty)


def test_a_log_without_pairs_gives_empty_neighbour_lists() -> None:
    tables = build_tables(log_of(views("s", "a", 0) + views("t", "b", 5_000)))
    assert tables.covis_indptr.tolist() == [0, 0, 0]
    assert tables.covis_indices.shape == (0,)
    tables.check()


# --- built tables as bundle parts -------------------------------------------------------------

ROUND_TRIP_ROWS: list[Row] = [
    *COVIS_ROWS,
    ("s5", "a", 400_000, "view", "shoes", 20.0),
    ("s5", "p", 401_000, "add_to_cart", "socks", 2.5),
]


@pytest.fixture(scope="module")
def tables() -> CandidateTables:
    return build_tables(log_of(ROUND_TRIP_ROWS))


def test_parts_round_trip(tables: CandidateTables) -> None:
    parts = tables.to_parts()
    assert all(name.startswith(TABLES_PREFIX) for name in parts)
    back = CandidateTables.from_parts(parts)
    assert back.item_ids == tables.item_ids
    assert back.categories == tables.categories
    for name in ("covis_indptr", "covis_indices", "covis_weights", "pop_all", "pop_recent",
                 "category", "sess_indptr", "sess_items", "item_sess_indptr", "item_sess"):
        original, loaded = getattr(tables, name), getattr(back, name)
        assert loaded.dtype == original.dtype, name
        np.testing.assert_array_equal(loaded, original, err_msg=name)
    np.testing.assert_array_equal(back.price, tables.price)  # NaN equals NaN here
    np.testing.assert_array_equal(back.recent_order, tables.recent_order)
    assert back.to_parts() == parts
