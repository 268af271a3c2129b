from __future__ import annotations

from dataclasses import fields

import numpy as np

from central.eventlog import COLUMNS, EventLog, Row, build_log


def rows(*specs: tuple[int, str, str, int]) -> list[Row]:
    return [(key, session, item, ts, 0, None, None) for key, session, item, ts in specs]


def strings(log: EventLog) -> list[tuple[int, str, str, int]]:
    return [
        (int(key), log.session_ids[session], log.item_ids[item], int(ts))
        for key, session, item, ts in zip(
            log.key.tolist(), log.session.tolist(), log.item.tolist(), log.ts.tolist(),
            strict=True,
        )
    ]


def test_the_columns_are_defined_once() -> None:
    assert [f.name for f in fields(EventLog)][3:] == list(COLUMNS)
    empty = EventLog.empty()
    assert {name: getattr(empty, name).dtype for name in COLUMNS} == {
        name: np.dtype(dtype) for name, dtype in COLUMNS.items()
    }


def test_appending_leaves_an_older_log_as_it_was() -> None:
    first = EventLog.empty()
    codes = first.codes()
    first = first.appended(rows((1, "s1", "a", 10), (2, "s1", "b", 11)), codes)
    before = strings(first)
    second = first.appended(rows((3, "s2", "c", 12), (4, "s1", "a", 13)), codes)
    assert strings(first) == before
    assert first.n_events == 2
    assert strings(second) == [*before, (3, "s2", "c", 12), (4, "s1", "a", 13)]


def test_by_session_groups_rows_and_recodes_the_strings_in_use() -> None:
    log = EventLog.empty()
    log = log.appended(
        rows((1, "s1", "a", 30), (2, "s2", "b", 10), (3, "s1", "c", 20), (4, "gone", "x", 5)),
        log.codes(),
    )
    grouped = log.select(np.array([0, 1, 2])).by_session()
    assert strings(grouped) == [(3, "s1", "c", 20), (1, "s1", "a", 30), (2, "s2", "b", 10)]
    assert grouped.session_ids == ["s1", "s2"]
    assert grouped.item_ids == ["a", "b", "c"]
    assert grouped.item_ids is not log.item_ids
    assert grouped.session_bounds().tolist() == [0, 2, 3]


def test_by_time_orders_by_time_then_key() -> None:
    log = EventLog.empty()
    log = log.appended(rows((9, "s", "a", 20), (5, "s", "b", 20), (7, "s", "c", 10)), log.codes())
    assert [key for key, *_ in strings(log.by_time())] == [7, 5, 9]


def test_compacted_drops_strings_no_row_uses() -> None:
    log = EventLog.empty()
    log = log.appended(rows((1, "s1", "a", 1), (2, "s2", "b", 2)), log.codes())
    kept = log.select(log.key == 2).compacted()
    assert (kept.session_ids, kept.item_ids) == (["s2"], ["b"])
    assert strings(kept) == [(2, "s2", "b", 2)]


def test_build_log_keys_rows_by_their_position() -> None:
    log = build_log(["s2", "s1", "s2"], ["a", "b", "c"], [3, 1, 2], [0, 0, 0], [None] * 3,
                    [None] * 3)
    assert strings(log) == [(2, "s2", "c", 2), (0, "s2", "a", 3), (1, "s1", "b", 1)]
