from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from central.datasets import LogFormat, read_log
from central.errors import SplitError
from central.evaluation.split import Split, prepare, validation_split
from central.eventlog import EventLog, build_log

DAY = 86_400


def shared_data_file(name: str) -> Path:
    """A file of the shared data directory, or a skip saying where it was looked for."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    directory = Path(os.environ.get("PROXIMA_SHARED_DATA", default))
    path = directory / name
    if not path.is_file():
        pytest.skip(f"shared data not found at {directory}: {name} is absent")
    return path


def shared_split(name: str, fmt: LogFormat) -> Split:
    log, _ = read_log(shared_data_file(name), fmt)
    return prepare(log, test_days=7)


def log_of(rows: list[tuple[str, str, int]]) -> EventLog:
    """A log from (session, item, seconds) rows; every event a view."""
    return build_log(
        [session for session, _, _ in rows],
        [item for _, item, _ in rows],
        [seconds * 1000 for _, _, seconds in rows],
        [0] * len(rows),
        [None] * len(rows),
        [None] * len(rows),
    )


# With min_item_support=3 and test_days=1 (worked out by hand):
# - s4 is a single event and goes first, so E, seen 3 times in all, counts 2 and goes;
# - s5 is then left with one event and goes; R is seen once and goes from s6;
# - tmax is s10's last event, 2d+310s, so test sessions end at or after 1d+310s: s7-s11;
#   s11 starts before that and is still a test session, s12 ends 10 s before and trains;
# - F is seen 4 times but only in test sessions, so it goes from s8, s9 and s10; s9 and
#   s10 are then too short and go.
HAND_ROWS: list[tuple[str, str, int]] = [
    ("s1", "A", 0), ("s1", "B", 10), ("s1", "C", 20),
    ("s2", "A", 100), ("s2", "B", 110),
    ("s3", "B", 200), ("s3", "C", 210), ("s3", "A", 220),
    ("s4", "E", 300),
    ("s5", "E", 400), ("s5", "A", 410), ("s5", "E", 420),
    ("s6", "A", 500), ("s6", "R", 510), ("s6", "C", 520),
    ("s7", "A", 2 * DAY), ("s7", "B", 2 * DAY + 10), ("s7", "C", 2 * DAY + 20),
    ("s8", "B", 2 * DAY + 100), ("s8", "F", 2 * DAY + 110), ("s8", "C", 2 * DAY + 120),
    ("s9", "F", 2 * DAY + 200), ("s9", "A", 2 * DAY + 210),
    ("s10", "F", 2 * DAY + 300), ("s10", "F", 2 * DAY + 310),
    ("s11", "B", DAY + 200), ("s11", "A", DAY + 400),
    ("s12", "A", DAY + 100), ("s12", "C", DAY + 300),
]


def hand_split() -> Split:
    return prepare(log_of(HAND_ROWS), test_days=1, min_item_support=3)


def sessions_of(log: EventLog) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for session, item in zip(log.session.tolist(), log.item.tolist(), strict=True):
        out.setdefault(log.session_ids[session], []).append(log.item_ids[item])
    return out


def test_hand_log_split_applies_every_filter_in_order() -> None:
    split = hand_split()
    assert sessions_of(split.train) == {
        "s1": ["A", "B", "C"], "s2": ["A", "B"], "s3": ["B", "C", "A"], "s6": ["A", "C"],
        "s12": ["A", "C"],
    }
    assert sessions_of(split.test) == {"s7": ["A", "B", "C"], "s8": ["B", "C"], "s11": ["B", "A"]}
    assert (split.train_events, split.train_sessions) == (12, 5)
    assert (split.test_events, split.test_sessions, split.predictions) == (7, 3, 4)
    assert split.test_from_ms == (DAY + 310) * 1000


def test_split_keeps_the_input_vocabularies() -> None:
    log = log_of(HAND_ROWS)
    split = prepare(log, test_days=1, min_item_support=3)
    assert split.train.item_ids is log.item_ids
    assert split.test.session_ids is log.session_ids


def test_default_support_of_five_drops_items_seen_four_times() -> None:
    rows = [(f"s{n}", item, n * 10 + offset) for n in range(5)
            for offset, item in enumerate(("A", "B"))]
    rows += [("late", "A", 10 * DAY), ("late", "B", 10 * DAY + 1), ("late", "C", 10 * DAY + 2)]
    rows += [(f"c{n}", item, 100 + n * 10 + offset) for n, other in enumerate("ABA")
             for offset, item in enumerate(("C", other))]
    assert sessions_of(prepare(log_of(rows)).test) == {"late": ["A", "B"]}
    assert sessions_of(prepare(log_of(rows), min_item_support=4).test) == {
        "late": ["A", "B", "C"]
    }


def test_validation_split_splits_the_training_log_by_time_only() -> None:
    train = hand_split().train
    inner = validation_split(train, days=1)
    # tmax of the training log is s12's 1d+300s, so sessions ending at or after 300s test.
    assert sessions_of(inner.test) == {"s6": ["A", "C"], "s12": ["A", "C"]}
    assert set(sessions_of(inner.train)) == {"s1", "s2", "s3"}


def test_a_split_with_no_training_sessions_is_refused() -> None:
    rows = [("s1", "A", 0), ("s1", "B", 1), ("s2", "A", 2), ("s2", "B", 3)]
    with pytest.raises(SplitError, match="nothing is left to train on"):
        prepare(log_of(rows), min_item_support=1)


def test_a_split_with_no_test_sessions_is_refused() -> None:
    rows = [("s1", "A", 0), ("s1", "B", 1), ("s2", "C", 10 * DAY), ("s2", "D", 10 * DAY + 1)]
    with pytest.raises(SplitError, match="nothing is left to test on"):
        prepare(log_of(rows), min_item_support=1)


def test_a_log_filtered_to_nothing_is_refused() -> None:
    with pytest.raises(SplitError, match="no session of two or more events"):
        prepare(log_of([("s1", "A", 0), ("s2", "A", 1), ("s2", "B", 2)]))


def test_non_positive_test_days_are_refused() -> None:
    with pytest.raises(SplitError, match="test_days"):
        prepare(log_of(HAND_ROWS), test_days=0)


def test_diginetica_sample_makes_the_public_number_of_predictions() -> None:
    split = shared_split("diginetica-sample.csv", "diginetica")
    assert split.predictions == 102
    assert np.all(np.isin(split.test.item, split.train.item))


def test_movielens_100k_makes_the_public_number_of_predictions() -> None:
    split = shared_split("movielens-100k.csv", "csv")
    assert split.predictions == 2196
