from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from central.datasets import read_log
from central.eventlog import build_log
from central.trainer.tables import build_tables
from devtools.loggen import GeneratorConfig, generate_file
from protocol import features
from protocol.candidates import CandidateConfig, Candidates, generate
from protocol.events import Event, EventType
from protocol.features import (
    CLOCK_COLUMNS,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    N_FEATURES,
    Column,
    compute,
)
from protocol.featurize import event_time
from protocol.tables import CandidateTables
from protocol.window import SessionWindow, WindowConfig

# (session, item, category, price); every event a view.
TRAINING: list[tuple[str, str, str | None, float | None]] = [
    ("s1", "a", "x", 20.0), ("s1", "b", "x", 10.0), ("s1", "c", "y", 25.0),
    ("s2", "a", "x", 20.0), ("s2", "c", "y", 25.0), ("s2", "d", "y", None),
    ("s3", "b", "x", 10.0), ("s3", "e", "x", 10.0),
    ("s4", "f", "z", 5.0), ("s4", "g", None, 8.0), ("s4", "f", "z", 5.0),
]
START_MS = 1_000_000


@pytest.fixture(scope="module")
def tables() -> CandidateTables:
    n = len(TRAINING)
    log = build_log(
        [row[0] for row in TRAINING], [row[1] for row in TRAINING],
        [1_000 * position for position in range(n)], [0] * n,
        [row[2] for row in TRAINING], [row[3] for row in TRAINING],
    )
    return build_tables(log)


def event(
    n: int,
    event_type: EventType,
    item: str | None = None,
    *,
    category: str | None = None,
    price: float | None = None,
    query: str | None = None,
) -> Event:
    return Event(f"event-{n:04d}", "q", event_type, START_MS + 1_000 * n, item_id=item,
                 category=category, price=price, query=query)


def session_window() -> SessionWindow:
    """view b, view a, cart b, click a, search: every item event in category x."""
    window = SessionWindow("q")
    for added in (
        event(0, "view", "b", category="x", price=10.0),
        event(1, "view", "a", category="x", price=20.0),
        event(2, "add_to_cart", "b", category="x", price=10.0),
        event(3, "click", "a", category="x", price=20.0),
        event(4, "search", query="shoes"),
    ):
        assert window.add(added)
    return window


ALL_ITEMS = CandidateConfig(min_candidates=7)


def column_by_item(
    tables: CandidateTables, found: Candidates, matrix: npt.NDArray[np.float32], name: str
) -> dict[str, float]:
    column = Column[name]
    return {
        tables.item_ids[int(item)]: float(value)
        for item, value in zip(found.items, matrix[:, column], strict=True)
    }


@pytest.fixture(scope="module")
def computed(tables: CandidateTables) -> tuple[Candidates, npt.NDArray[np.float32]]:
    window = session_window()
    found = generate(window, tables, ALL_ITEMS)
    return found, compute(window, found, tables, event_time(window))


def test_feature_names_are_unique_and_counted() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == N_FEATURES
    assert isinstance(FEATURE_SCHEMA_VERSION, int)
    assert FEATURE_SCHEMA_VERSION >= 1


def test_named_columns_number_the_feature_names_in_order() -> None:
    assert [int(column) for column in Column] == list(range(N_FEATURES))
    assert tuple(column.name for column in Column) == FEATURE_NAMES
    assert FEATURE_NAMES[Column.since_seen] == "since_seen"
    assert set(CLOCK_COLUMNS) == {Column.since_seen, Column.session_age}


def test_matrix_is_float32_finite_with_one_row_per_candidate(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    found, matrix = computed
    assert sorted(tables.item_ids[int(i)] for i in found.items) == list("abcdefg")
    assert matrix.shape == (7, N_FEATURES)
    assert matrix.dtype == np.float32
    assert np.isfinite(matrix).all()


def expect(
    tables: CandidateTables,
    computed: tuple[Candidates, npt.NDArray[np.float32]],
    name: str,
    values: dict[str, float],
) -> None:
    found, matrix = computed
    assert column_by_item(tables, found, matrix, name) == pytest.approx(values, rel=1e-6, abs=1e-7)


def test_session_item_columns(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    others = dict.fromkeys("cdefg", 0.0)
    expect(tables, computed, "in_session", {"a": 1.0, "b": 1.0, **others})
    # a: view and click; b: view and cart.
    expect(tables, computed, "session_count", {"a": math.log1p(2), "b": math.log1p(2), **others})
    expect(tables, computed, "session_recency", {"a": 1.0, "b": 0.5, **others})
    expect(tables, computed, "is_last_item", {"a": 1.0, "b": 0.0, **others})
    expect(tables, computed, "in_cart", {"a": 0.0, "b": 1.0, **others})
    # Now is the search, 4 s after the first event: a last seen 1 s before, b 2 s before;
    # items never seen take the sentinel log1p(window span in s) + 1.
    never = math.log1p(30 * 60) + 1.0
    expect(tables, computed, "since_seen",
           {"a": math.log1p(1), "b": math.log1p(2), **dict.fromkeys("cdefg", never)})


def test_category_columns(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    # Four of the window's five events are in x; c and d are in y, f in z, g has none.
    expect(tables, computed, "category_share",
           {"a": 0.8, "b": 0.8, "e": 0.8, "c": 0.0, "d": 0.0, "f": 0.0, "g": 0.0})
    expect(tables, computed, "same_category_as_last",
           {"a": 1.0, "b": 1.0, "e": 1.0, "c": 0.0, "d": 0.0, "f": 0.0, "g": 0.0})


def test_price_columns(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    # The window's priced events average (10 + 20 + 10 + 20) / 4 = 15; d has no price.
    mean = 15.0
    expect(tables, computed, "price_ratio", {
        "a": math.log(20 / mean), "b": math.log(10 / mean), "c": math.log(25 / mean), "d": 0.0,
        "e": math.log(10 / mean), "f": math.log(5 / mean), "g": math.log(8 / mean),
    })
    expect(tables, computed, "has_price", {**dict.fromkeys("abcefg", 1.0), "d": 0.0})


def test_covisitation_share_and_inverse_rank(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    # covis (a last, weight 1; b weight 1/2): a 0.5, b 1, c 2, d 0.5, e 0.5, f and g 0.
    expect(tables, computed, "covis",
           {"a": math.log1p(0.5), "b": math.log1p(1), "c": math.log1p(2), "d": math.log1p(0.5),
            "e": math.log1p(0.5), "f": 0.0, "g": 0.0})
    expect(tables, computed, "covis_share",
           {"a": 0.25, "b": 0.5, "c": 1.0, "d": 0.25, "e": 0.25, "f": 0.0, "g": 0.0})
    # Tied scores share a rank: a, d and e each have two candidates above them.
    expect(tables, computed, "covis_rank",
           {"a": 1 / 3, "b": 1 / 2, "c": 1.0, "d": 1 / 3, "e": 1 / 3, "f": 0.0, "g": 0.0})
    # With a alone: b 1, c 1.5, d 0.5.
    expect(tables, computed, "covis_last_share",
           {"a": 0.0, "b": 1 / 1.5, "c": 1.0, "d": 0.5 / 1.5, "e": 0.0, "f": 0.0, "g": 0.0})


def test_session_knn_share_and_inverse_rank(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    # Neighbour similarities: s1 (a b c) 5/3 / sqrt(6), s2 (a c d) 1 / sqrt(6), s3 (b e) 1/3.
    s1, s2, s3 = 5 / 3 / math.sqrt(6), 1 / math.sqrt(6), 1 / 3
    sknn = {"a": s1 + s2, "b": s1 + s3, "c": s1 + s2, "d": s2, "e": s3, "f": 0.0, "g": 0.0}
    expect(tables, computed, "sknn", {item: math.log1p(v) for item, v in sknn.items()})
    best = s1 + s2
    expect(tables, computed, "sknn_share", {item: v / best for item, v in sknn.items()})
    # a and c tie first; b, d and e follow with two, three and four candidates above.
    expect(tables, computed, "sknn_rank",
           {"a": 1.0, "c": 1.0, "b": 1 / 3, "d": 1 / 4, "e": 1 / 5, "f": 0.0, "g": 0.0})


def test_popularity_columns(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    counts = {"a": 2, "b": 2, "c": 2, "d": 1, "e": 1, "f": 2, "g": 1}
    expect(tables, computed, "pop_all", {item: math.log1p(n) for item, n in counts.items()})
    expect(tables, computed, "pop_recent", {item: math.log1p(n) for item, n in counts.items()})
    expect(tables, computed, "pop_recent_share", {item: n / 2 for item, n in counts.items()})


def test_session_wide_columns_repeat_on_every_row(
    tables: CandidateTables, computed: tuple[Candidates, npt.NDArray[np.float32]]
) -> None:
    wide = {
        "session_events": math.log1p(5),
        "session_items": math.log1p(2),
        "session_age": math.log1p(4),
        "views": math.log1p(2),
        "clicks": math.log1p(1),
        "carts": math.log1p(1),
        "purchases": 0.0,
        "searches": math.log1p(1),
    }
    for name, value in wide.items():
        expect(tables, computed, name, dict.fromkeys("abcdefg", value))


def test_a_later_now_ages_the_session(tables: CandidateTables) -> None:
    window = session_window()
    found = generate(window, tables, ALL_ITEMS)
    later = compute(window, found, tables, now_ms=START_MS + 60_000)
    assert column_by_item(tables, found, later, "session_age")["a"] == pytest.approx(math.log1p(60))
    assert column_by_item(tables, found, later, "since_seen")["a"] == pytest.approx(math.log1p(57))
    # A now before the last event is the last event.
    earlier = compute(window, found, tables, now_ms=START_MS)
    np.testing.assert_array_equal(earlier, compute(window, found, tables, event_time(window)))


def test_only_the_clock_columns_move_with_now(tables: CandidateTables) -> None:
    window = session_window()
    found = generate(window, tables, ALL_ITEMS)
    at_event = compute(window, found, tables, event_time(window))
    later = compute(window, found, tables, event_time(window) + 90_000)
    moved = {Column(int(c)).name for c in np.flatnonzero((at_event != later).any(axis=0))}
    assert moved == {column.name for column in CLOCK_COLUMNS}


def test_same_window_and_tables_give_the_same_matrix(tables: CandidateTables) -> None:
    first_window = session_window()
    first = compute(
        first_window, generate(first_window, tables, ALL_ITEMS), tables, event_time(first_window)
    )
    second_window = session_window()
    second = compute(
        second_window, generate(second_window, tables, ALL_ITEMS), tables,
        event_time(second_window),
    )
    np.testing.assert_array_equal(first, second)


def test_a_window_restored_from_msgpack_gives_the_same_matrix(tables: CandidateTables) -> None:
    window = session_window()
    restored = SessionWindow.from_msgpack(window.to_msgpack())
    np.testing.assert_array_equal(
        compute(window, generate(window, tables, ALL_ITEMS), tables, event_time(window)),
        compute(restored, generate(restored, tables, ALL_ITEMS), tables, event_time(restored)),
    )


def test_no_candidates_give_an_empty_matrix(tables: CandidateTables) -> None:
    window = session_window()
    found = generate(window, tables, ALL_ITEMS)
    empty = Candidates(found.items[:0], found.covis[:0], found.covis_last[:0], found.sknn[:0],
                       found.session_items, found.session_rows[:0], found.session_ranks[:0])
    matrix = compute(window, empty, tables, event_time(window))
    assert matrix.shape == (0, N_FEATURES)
    assert matrix.dtype == np.float32


def test_a_cold_window_has_no_session_item_features(tables: CandidateTables) -> None:
    window = SessionWindow("cold")
    window.add(event(0, "view", "never-seen", category="x", price=12.0))
    found = generate(window, tables, ALL_ITEMS)
    matrix = compute(window, found, tables, event_time(window))
    assert np.isfinite(matrix).all()
    for name in ("in_session", "session_count", "session_recency", "is_last_item", "covis",
                 "sknn", "covis_rank", "sknn_rank"):
        assert not matrix[:, Column[name]].any(), name
    # The window's category still counts, the last item's category is unknown to the tables.
    assert column_by_item(tables, found, matrix, "category_share")["a"] == pytest.approx(1.0)
    assert not matrix[:, Column.same_category_as_last].any()


def test_features_on_a_generated_log_are_finite(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    generate_file(path, GeneratorConfig(sessions=120, items=200, categories=5, seed=5))
    log, _ = read_log(path, "csv")
    tables = build_tables(log)
    bounds = log.session_bounds()
    config = WindowConfig()
    rows = 0
    for run in range(0, bounds.shape[0] - 1, 3):
        window = SessionWindow(log.session_ids[int(log.session[bounds[run]])], config)
        for event_row in range(int(bounds[run]), int(bounds[run + 1])):
            window.add(log.event(event_row))
            found = generate(window, tables, CandidateConfig())
            matrix = features.compute(window, found, tables, event_time(window))
            assert matrix.shape == (len(found), N_FEATURES)
            assert matrix.dtype == np.float32
            assert np.isfinite(matrix).all()
            rows += matrix.shape[0]
    assert rows > 0


def test_repeat_consumption_columns(tables: CandidateTables) -> None:
    # a at 0 s, b at 1 s and 4 s, c at 10 s and 11 s: the session went back to b, and
    # ends on c twice.
    window = SessionWindow("q")
    for second, item in ((0, "a"), (1, "b"), (4, "b"), (10, "c"), (11, "c")):
        assert window.add(event(second, "view", item))
    found = generate(window, tables, ALL_ITEMS)
    matrix = compute(window, found, tables, event_time(window))
    steps = column_by_item(tables, found, matrix, "steps_since_seen")
    assert steps["a"] == pytest.approx(math.log1p(4))
    assert steps["b"] == pytest.approx(math.log1p(2))
    assert steps["c"] == 0.0
    never = math.log1p(window.config.max_events) + 1.0
    assert steps["d"] == pytest.approx(never)
    # Seconds from each of the item's events to the next event: a 1, b 3 + 6, c 1 + 0.
    dwell = column_by_item(tables, found, matrix, "dwell")
    assert dwell == pytest.approx({**dict.fromkeys(dwell, 0.0), "a": math.log1p(1),
                                   "b": math.log1p(9), "c": math.log1p(1)})
    share = column_by_item(tables, found, matrix, "dwell_share")
    assert share == pytest.approx({**dict.fromkeys(share, 0.0), "a": 1 / 9, "b": 1.0,
                                   "c": 1 / 9})
    run = column_by_item(tables, found, matrix, "last_run")
    assert run == pytest.approx({**dict.fromkeys(run, 0.0), "c": math.log1p(2)})
    # Five item events over three items: two returned to an item seen before.
    assert matrix[:, Column.repeat_share] == pytest.approx(np.full(len(found), 2 / 5))

