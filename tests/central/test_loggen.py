from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from central.datasets import read_log
from devtools.loggen import (
    DAY_MS,
    EVENT_TYPE_NAMES,
    HEADER,
    GenerateStats,
    GeneratorConfig,
    generate,
    generate_file,
)
from protocol.events import EVENT_TYPES, ITEM_EVENT_TYPES

COLUMNS = ["session_id", "user_id", "item_id", "timestamp", "event_type", "category", "price"]
CONFIG = GeneratorConfig(sessions=3_000, items=2_000, categories=20, seed=11)


@dataclass(frozen=True)
class Row:
    session_id: str
    user_id: str
    item_id: str
    timestamp: int
    event_type: str
    category: str
    price: str


@dataclass(frozen=True)
class Generated:
    text: str
    stats: GenerateStats
    rows: list[Row]

    def sessions(self) -> dict[str, list[Row]]:
        grouped: dict[str, list[Row]] = defaultdict(list)
        for row in self.rows:
            grouped[row.session_id].append(row)
        return grouped

    def views(self) -> list[Row]:
        return [row for row in self.rows if row.event_type == "view"]


def run(config: GeneratorConfig) -> Generated:
    out = io.StringIO()
    stats = generate(out, config)
    text = out.getvalue()
    reader = csv.reader(io.StringIO(text))
    next(reader)
    rows = [
        Row(session, user, item, int(ts), event_type, category, price)
        for session, user, item, ts, event_type, category, price in reader
    ]
    return Generated(text, stats, rows)


@pytest.fixture(scope="module")
def log() -> Generated:
    return run(CONFIG)


def test_header_and_row_format(log: Generated) -> None:
    lines = log.text.splitlines()
    assert log.text.startswith(HEADER)
    assert lines[0] == ",".join(COLUMNS)
    price = re.compile(r"\d+\.\d\d")
    for line in lines[1:]:
        session, user, item, ts, event_type, category, amount = line.split(",")
        assert session and item and category
        assert user == "" or user.startswith("u")
        assert ts.isdigit()
        assert event_type in EVENT_TYPE_NAMES
        assert price.fullmatch(amount) and float(amount) > 0


def test_event_types_are_item_events_of_the_protocol() -> None:
    assert set(EVENT_TYPE_NAMES) <= ITEM_EVENT_TYPES


def test_csv_module_reads_back_the_columns(log: Generated) -> None:
    reader = csv.DictReader(io.StringIO(log.text))
    records = list(reader)
    assert reader.fieldnames == COLUMNS
    assert len(records) == log.stats.events
    assert all(record["item_id"] for record in records)


def test_same_seed_gives_same_bytes_and_another_seed_differs(log: Generated) -> None:
    assert run(CONFIG).text == log.text
    assert run(replace(CONFIG, seed=CONFIG.seed + 1)).text != log.text


def test_writes_the_requested_number_of_sessions(log: Generated) -> None:
    assert len(log.sessions()) == CONFIG.sessions
    assert log.stats.sessions == CONFIG.sessions


def test_sessions_spanning_several_batches_keep_their_count() -> None:
    generated = run(GeneratorConfig(sessions=9_000, items=500, categories=5, seed=2))
    assert len(generated.sessions()) == 9_000


def test_zero_sessions_writes_only_the_header() -> None:
    generated = run(GeneratorConfig(sessions=0))
    assert generated.text == HEADER
    assert generated.stats.events == 0
    assert generated.stats.first_ts_ms is None


def test_stats_match_the_rows(log: Generated) -> None:
    stats = log.stats
    assert stats.events == len(log.rows)
    assert set(stats.events_by_type) == set(EVENT_TYPE_NAMES)
    assert Counter(row.event_type for row in log.rows) == Counter(stats.events_by_type)
    assert stats.items_used == len({row.item_id for row in log.rows})
    first_rows = [rows[0] for rows in log.sessions().values()]
    assert stats.users == len({row.user_id for row in first_rows if row.user_id})
    assert stats.anonymous_sessions == sum(1 for row in first_rows if not row.user_id)
    purchasing = {row.session_id for row in log.rows if row.event_type == "purchase"}
    assert stats.purchasing_sessions == len(purchasing)
    assert stats.first_ts_ms == min(row.timestamp for row in log.rows)
    assert stats.last_ts_ms == max(row.timestamp for row in log.rows)


def test_sessions_are_contiguous_and_in_time_order(log: Generated) -> None:
    finished: set[str] = set()
    previous: Row | None = None
    for row in log.rows:
        if previous is not None and row.session_id != previous.session_id:
            finished.add(previous.session_id)
            assert row.session_id not in finished
        elif previous is not None:
            assert row.timestamp >= previous.timestamp
            assert row.user_id == previous.user_id
        previous = row


def test_timestamps_stay_within_the_configured_span(log: Generated) -> None:
    end = CONFIG.start_ms + int(CONFIG.days * DAY_MS)
    assert all(CONFIG.start_ms <= row.timestamp < end for row in log.rows)


@pytest.mark.parametrize("days", [2.5, 0.0001])
def test_short_spans_hold_every_session(days: float) -> None:
    start = 1_700_000_000_000
    generated = run(GeneratorConfig(sessions=500, items=300, start_ms=start, days=days))
    end = start + int(days * DAY_MS)
    assert all(start <= row.timestamp < end for row in generated.rows)


def test_most_sessions_are_shorter_than_half_an_hour(log: Generated) -> None:
    durations = [rows[-1].timestamp - rows[0].timestamp for rows in log.sessions().values()]
    assert sum(d < 30 * 60_000 for d in durations) > 0.9 * len(durations)


def test_session_lengths_are_heavy_tailed(log: Generated) -> None:
    lengths = sorted(len(rows) for rows in log.sessions().values())
    mean = sum(lengths) / len(lengths)
    assert 4 <= mean <= 12
    assert lengths[len(lengths) // 2] < mean  # right-skewed
    assert lengths[-1] > 5 * mean


def test_item_popularity_is_skewed(log: Generated) -> None:
    counts = sorted(Counter(row.item_id for row in log.views()).values(), reverse=True)
    top = max(1, CONFIG.items // 100)
    assert sum(counts[:top]) > 0.15 * sum(counts)  # uniform would give 1%


def test_next_item_mostly_shares_the_current_category(log: Generated) -> None:
    views = log.views()
    category_share = Counter(row.category for row in views)
    chance = sum((count / len(views)) ** 2 for count in category_share.values())
    same = pairs = 0
    for rows in log.sessions().values():
        viewed = [row for row in rows if row.event_type == "view"]
        for current, following in pairwise(viewed):
            if current.item_id != following.item_id:
                pairs += 1
                same += current.category == following.category
    assert same / pairs > 5 * chance


def test_items_are_viewed_again_within_sessions(log: Generated) -> None:
    repeats = 0
    for rows in log.sessions().values():
        viewed = [row.item_id for row in rows if row.event_type == "view"]
        repeats += len(viewed) - len(set(viewed))
    assert repeats > 0.05 * len(log.views())


def test_each_item_keeps_one_category_and_price(log: Generated) -> None:
    seen: dict[str, tuple[str, str]] = {}
    for row in log.rows:
        assert seen.setdefault(row.item_id, (row.category, row.price)) == (row.category, row.price)


def test_categories_differ_in_price_range(log: Generated) -> None:
    prices: dict[str, list[float]] = defaultdict(list)
    for row in log.rows:
        prices[row.category].append(float(row.price))
    medians = sorted(sorted(values)[len(values) // 2] for values in prices.values())
    assert medians[-1] > 10 * medians[0]


def test_funnel_runs_view_then_cart_then_purchase(log: Generated) -> None:
    for rows in log.sessions().values():
        viewed: set[str] = set()
        in_cart: set[str] = set()
        ever_carted: set[str] = set()
        for row in rows:
            if row.event_type == "view":
                viewed.add(row.item_id)
            elif row.event_type in ("click", "add_to_cart"):
                assert row.item_id in viewed
            if row.event_type == "add_to_cart":
                assert row.item_id not in ever_carted
                in_cart.add(row.item_id)
                ever_carted.add(row.item_id)
            elif row.event_type == "remove_from_cart":
                assert row.item_id in in_cart
                in_cart.discard(row.item_id)
            elif row.event_type == "purchase":
                assert row.item_id in in_cart
    counts = Counter(row.event_type for row in log.rows)
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["remove_from_cart"] > 0


def test_purchases_close_their_session(log: Generated) -> None:
    for rows in log.sessions().values():
        types = [row.event_type for row in rows]
        if "purchase" in types:
            first = types.index("purchase")
            assert set(types[first:]) == {"purchase"}


def test_users_return_and_some_sessions_are_anonymous(log: Generated) -> None:
    sessions_per_user = Counter(rows[0].user_id for rows in log.sessions().values())
    anonymous = sessions_per_user.pop("", 0)
    assert 0.15 * CONFIG.sessions < anonymous < 0.45 * CONFIG.sessions
    assert max(sessions_per_user.values()) > 3
    assert sum(sessions_per_user.values()) > 1.5 * len(sessions_per_user)


def test_session_starts_follow_a_daily_cycle(log: Generated) -> None:
    hours = Counter(
        (rows[0].timestamp // 3_600_000) % 24 for rows in log.sessions().values()
    )
    assert max(hours.values()) > 3 * min(hours[hour] for hour in range(24))


def test_generate_file_writes_the_same_bytes(tmp_path: Path, log: Generated) -> None:
    path = tmp_path / "log.csv"
    stats = generate_file(path, CONFIG)
    assert path.read_bytes() == log.text.encode()
    assert stats == log.stats


def test_project_reader_reads_the_log(tmp_path: Path, log: Generated) -> None:
    path = tmp_path / "log.csv"
    path.write_text(log.text, encoding="utf-8")
    event_log, read_stats = read_log(path, "csv")
    assert read_stats.rows_skipped == 0
    assert event_log.n_events == log.stats.events
    assert len(event_log.session_ids) == CONFIG.sessions
    assert len(event_log.item_ids) == log.stats.items_used
    assert int(event_log.ts.min()) == log.stats.first_ts_ms
    assert int(event_log.ts.max()) == log.stats.last_ts_ms
    read_types = Counter(EVENT_TYPES[code] for code in event_log.event_type.tolist())
    assert read_types == Counter(log.stats.events_by_type)


@pytest.mark.parametrize(
    "changes",
    [
        {"sessions": -1},
        {"items": 3, "categories": 5},
        {"categories": 0},
        {"themes_per_category": 0},
        {"users": 0},
        {"anonymous_share": 1.5},
        {"seed": -1},
        {"start_ms": -5},
        {"days": 0.0},
        {"days": float("nan")},
        {"days": 1e9},
    ],
)
def test_config_rejects_impossible_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        replace(GeneratorConfig(sessions=10), **changes)


def test_small_catalogs_still_work() -> None:
    generated = run(GeneratorConfig(sessions=200, items=1, categories=1, users=1))
    assert {row.item_id for row in generated.rows} == {generated.rows[0].item_id}
    assert len(generated.sessions()) == 200
