from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from central.errors import DataFormatError
from central.trainer.eventstore import DAY_MS, SNAPSHOT_NAME, EventStore, StoreLimits
from protocol.events import EVENT_TYPES, Event, EventType

START_MS = 1_767_225_600_000
NOW_S = (START_MS + 60 * DAY_MS) / 1000


def clock() -> float:
    return NOW_S


def item_event(
    number: int,
    *,
    session: str | None = None,
    ts: int | None = None,
    kind: EventType = "view",
    item: str | None = None,
) -> Event:
    return Event(
        event_id=f"event-{number:06d}",
        session_id=session or f"s{number // 5}",
        type=kind,
        item_id=item or f"i{number % 17}",
        ts=START_MS + number * 1_000 if ts is None else ts,
        category=f"c{number % 3}" if number % 4 else None,
        price=float(number % 50) if number % 2 else None,
    )


def open_store(directory: Path, **limits: int) -> EventStore:
    return EventStore.open(directory, StoreLimits(**limits), clock=clock)


def test_an_event_is_kept_once_per_event_id(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.add([item_event(n) for n in range(10)]) == 10
        assert store.add([item_event(n) for n in range(5, 15)]) == 5
        assert store.add([item_event(20), item_event(20)]) == 1
        assert len(store) == 16
        assert store.sequence == 16
        assert store.counters.duplicates == 6


def test_only_item_events_are_kept(tmp_path: Path) -> None:
    search = Event(event_id="search-0001", session_id="s", type="search", ts=START_MS, query="q")
    impression = Event(
        event_id="impress-0001", session_id="s", type="impression", ts=START_MS, items=("a",)
    )
    with open_store(tmp_path) as store:
        assert store.add([search, impression, item_event(1, kind="purchase")]) == 1
        assert store.counters.ignored == 2


def test_events_older_than_the_age_bound_are_dropped(tmp_path: Path) -> None:
    with open_store(tmp_path, max_age_ms=10 * DAY_MS) as store:
        store.add([item_event(n, ts=START_MS + n * DAY_MS) for n in range(10)])
        assert len(store) == 10
        store.add([item_event(100, ts=START_MS + 15 * DAY_MS)])
        assert sorted(store.columns().ts.tolist()) == [
            START_MS + day * DAY_MS for day in (5, 6, 7, 8, 9, 15)
        ]
        assert store.counters.evicted == 5
        assert store.add([item_event(200, ts=START_MS + 4 * DAY_MS)]) == 0
        assert store.counters.too_old == 1


def test_the_oldest_events_go_beyond_the_count_bound(tmp_path: Path) -> None:
    with open_store(tmp_path, max_events=50) as store:
        store.add([item_event(n) for n in reversed(range(120))])
        kept = store.columns()
        assert kept.n_events == 50
        assert sorted(kept.ts.tolist()) == [START_MS + n * 1_000 for n in range(70, 120)]
        assert store.counters.evicted == 70


def test_events_far_ahead_of_the_clock_are_refused(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        future = int(NOW_S * 1000) + 2 * DAY_MS
        assert store.add([item_event(1, ts=future), item_event(2)]) == 1
        assert store.counters.from_future == 1


def test_events_and_offsets_survive_a_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.add([item_event(n) for n in range(30)], {"topic:0": 30})
        store.flush()
        store.add([item_event(n) for n in range(30, 40)], {"topic:0": 40, "topic:1": 7})
    with open_store(tmp_path) as reopened:
        assert len(reopened) == 40
        assert reopened.sequence == 40
        assert reopened.offsets == {"topic:0": 40, "topic:1": 7}
        assert reopened.add([item_event(n) for n in range(40)]) == 0


def test_a_snapshot_replaces_the_journal(tmp_path: Path) -> None:
    with open_store(tmp_path, snapshot_after_rows=25) as store:
        for first in range(0, 100, 10):
            store.add([item_event(n) for n in range(first, first + 10)], {"t:0": first + 10})
            store.flush()
    assert (tmp_path / SNAPSHOT_NAME).exists()
    assert len(list(tmp_path.glob("journal-*.log"))) == 1
    with open_store(tmp_path) as reopened:
        assert len(reopened) == 100
        assert reopened.offsets == {"t:0": 100}
        reopened.snapshot()
    with open_store(tmp_path) as again:
        assert sorted(again.columns().ts.tolist()) == [START_MS + n * 1_000 for n in range(100)]


def test_a_torn_last_record_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.add([item_event(n) for n in range(10)], {"t:0": 10})
        store.flush()
        store.add([item_event(n) for n in range(10, 20)], {"t:0": 20})
        store.flush()
    (journal,) = tmp_path.glob("journal-*.log")
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-7])
    with open_store(tmp_path) as reopened:
        assert len(reopened) == 10
        assert reopened.offsets == {"t:0": 10}
        assert reopened.counters.torn_bytes > 0
        reopened.add([item_event(n) for n in range(10, 20)], {"t:0": 20})
    with open_store(tmp_path) as recovered:
        assert len(recovered) == 20
        assert recovered.offsets == {"t:0": 20}
        assert recovered.counters.torn_bytes == 0


def test_a_damaged_snapshot_is_reported(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.add([item_event(n) for n in range(10)])
        store.snapshot()
    path = tmp_path / SNAPSHOT_NAME
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="checksum"):
        open_store(tmp_path)


def test_to_eventlog_builds_the_columnar_log(tmp_path: Path) -> None:
    events = [item_event(n, kind=EVENT_TYPES[n % 5]) for n in range(40)]
    with open_store(tmp_path, snapshot_after_rows=15) as store:
        store.add(events[:20])
        store.flush()
        store.add(events[20:])
        log = store.to_eventlog()
    assert log.n_events == 40
    rows = sorted(
        (
            log.session_ids[int(log.session[r])],
            int(log.ts[r]),
            log.item_ids[int(log.item[r])],
            EVENT_TYPES[int(log.event_type[r])],
            log.categories[int(log.category[r])] if log.category[r] >= 0 else None,
            None if np.isnan(log.price[r]) else float(log.price[r]),
        )
        for r in range(log.n_events)
    )
    expected = sorted((e.session_id, e.ts, e.item_id, e.type, e.category, e.price) for e in events)
    assert rows == expected
    bounds = log.session_bounds()
    assert bounds.shape[0] - 1 == len({e.session_id for e in events})


def test_the_same_events_give_the_same_log_whatever_their_arrival_order(tmp_path: Path) -> None:
    events = [item_event(n, session=f"s{n % 7}") for n in range(60)]
    logs = []
    for name, arrival in (("forward", events), ("backward", events[::-1])):
        with open_store(tmp_path / name) as store:
            store.add(arrival)
            logs.append(store.to_eventlog())
    forward, backward = logs
    assert forward.session_ids == backward.session_ids
    assert forward.item_ids == backward.item_ids
    for column in ("session", "item", "ts", "event_type", "category"):
        assert np.array_equal(getattr(forward, column), getattr(backward, column))
    assert np.array_equal(forward.price, backward.price, equal_nan=True)
