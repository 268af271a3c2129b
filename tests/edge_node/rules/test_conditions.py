from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.rules.conditions import HOLDS, Binding, Evaluation, compile_condition
from edge_node.rules.parse import document_from_data
from protocol.events import Event, EventType
from protocol.window import SessionWindow
from tests.edge_node.rules import MINUTE, NOW, FakeCatalog, event, rule, window_of

BERLIN = ZoneInfo("Europe/Berlin")


def check(
    when: dict[str, Any],
    window: SessionWindow | None = None,
    *,
    now_ms: int = NOW,
    catalog: FakeCatalog | None = None,
    need_items: bool = True,
    **context: str | int | float | bool | None,
) -> Binding:
    doc = document_from_data({"version": "t", "rules": [rule(when=when)]})
    compiled = compile_condition(doc.rules[0].when, need_items=need_items)
    ev = Evaluation(window or window_of(), context, now_ms, catalog or FakeCatalog())
    return compiled(ev)


def at(year: int, month: int, day: int, hour: int, minute: int, zone: ZoneInfo = BERLIN) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=zone).timestamp() * 1000)


# -- events --------------------------------------------------------------------------------


def test_events_count_by_type_and_window() -> None:
    window = window_of(
        event(NOW - 20 * MINUTE, "view", "a"),
        event(NOW - 5 * MINUTE, "view", "b"),
        event(NOW - 4 * MINUTE, "click", "b"),
        event(NOW - 1 * MINUTE, "add_to_cart", "b", price=10.0),
    )
    assert check({"events": {"type": "view", "at_least": 2}}, window) == HOLDS
    assert check({"events": {"type": "view", "within": "10m", "at_least": 2}}, window) is None
    assert check({"events": {"type": ["view", "click"], "within": "10m", "at_least": 2}},
                 window) == HOLDS
    assert check({"events": {"at_least": 4}}, window) == HOLDS
    assert check({"events": {"at_most": 3}}, window) is None
    assert check({"events": {"item": "b", "at_least": 3}}, window) == HOLDS
    assert check({"events": {"item": "b", "type": "view", "at_most": 1}}, window) == HOLDS
    assert check({"events": {"type": "purchase", "at_most": 0}}, window) == HOLDS
    assert check({"events": {"within": "30s", "at_least": 1}}, window) is None


def test_within_counts_back_from_the_request_time() -> None:
    window = window_of(event(NOW - 10 * MINUTE, "view", "a"))
    when = {"events": {"type": "view", "within": "10m", "at_least": 1}}
    assert check(when, window, now_ms=NOW) == HOLDS  # exactly ten minutes ago still counts
    assert check(when, window, now_ms=NOW + 1) is None


def test_events_category_is_the_events_own_else_the_catalogs() -> None:
    window = window_of(
        event(NOW - 3 * MINUTE, "view", "a", category="shoes"),
        event(NOW - 2 * MINUTE, "view", "b"),
        event(NOW - 1 * MINUTE, "search"),
    )
    catalog = FakeCatalog({"a": "boots", "b": "shoes"})
    when = {"events": {"category": "shoes", "at_least": 2}}
    assert check(when, window, catalog=catalog) == HOLDS
    assert check(when, window, catalog=FakeCatalog()) is None
    assert check({"events": {"type": "search", "at_least": 1}}, window) == HOLDS


def test_per_item_binds_each_qualifying_item_most_recent_first() -> None:
    window = window_of(
        event(NOW - 9 * MINUTE, "view", "a"),
        event(NOW - 8 * MINUTE, "view", "b"),
        event(NOW - 7 * MINUTE, "view", "c"),
        event(NOW - 6 * MINUTE, "view", "b"),
        event(NOW - 5 * MINUTE, "view", "a"),
        event(NOW - 4 * MINUTE, "click", "c"),
    )
    twice = {"events": {"type": "view", "at_least": 2, "per_item": True}}
    assert check(twice, window) == ("a", "b")
    assert check(twice, window, need_items=False) == HOLDS
    once = {"events": {"type": "view", "at_most": 1, "per_item": True}}
    assert check(once, window) == ("c",)
    assert check({"events": {"at_least": 2, "per_item": True, "item": "c"}}, window) == ("c",)
    assert check({"events": {"at_least": 3, "per_item": True}}, window) is None
    assert check({"events": {"at_least": 1, "per_item": True}}, window_of()) is None


def _reference_count(window: SessionWindow, now_ms: int, spec: dict[str, Any]) -> int:
    types = spec.get("type")
    wanted = None if types is None else ({types} if isinstance(types, str) else set(types))
    names = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search")
    within = {"5m": 5 * MINUTE, "30m": 30 * MINUTE}.get(spec.get("within", ""))
    count = 0
    for entry in window.entries:
        if wanted is not None and names[entry.type] not in wanted:
            continue
        if within is not None and entry.ts < now_ms - within:
            continue
        if "item" in spec and entry.item != spec["item"]:
            continue
        if "category" in spec and entry.category != spec["category"]:
            continue
        count += 1
    return count


TYPES: list[EventType] = ["view", "click", "add_to_cart", "remove_from_cart", "purchase", "search"]
events_strategy = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.sampled_from(TYPES),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["x", "y"]),
    ),
    max_size=30,
)


def _window(raw: list[tuple[int, EventType, str, str]]) -> SessionWindow:
    made: list[Event] = []
    for minutes_ago, type_, item, category in sorted(raw, key=lambda r: -r[0]):
        is_search = type_ == "search"
        made.append(event(NOW - minutes_ago * MINUTE, type_, None if is_search else item,
                          category=category))
    return window_of(*made)


@settings(max_examples=200, deadline=None)
@given(
    events_strategy,
    st.fixed_dictionaries(
        {"at_least": st.integers(0, 6)},
        optional={
            "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1,
                                                      max_size=3, unique=True),
            "within": st.sampled_from(["5m", "30m"]),
            "item": st.sampled_from(["a", "b"]),
            "category": st.sampled_from(["x", "y"]),
        },
    ),
)
def test_every_way_of_counting_agrees_with_a_plain_count(
    raw: list[tuple[int, EventType, str, str]], spec: dict[str, Any]
) -> None:
    if "item" in spec and "category" in spec:
        del spec["category"]
    if spec.get("type") in ("search", ["search"]):
        spec.pop("item", None)  # search events carry no item: a parse error, tested elsewhere
    window = _window(raw)
    expected = _reference_count(window, NOW, spec)
    low = spec["at_least"]
    assert (check({"events": spec}, window) == HOLDS) == (expected >= low)
    bounded = {**spec, "at_least": 0, "at_most": low}
    assert (check({"events": bounded}, window) == HOLDS) == (expected <= low)


# -- cart, last item, context --------------------------------------------------------------


def test_cart_value_and_items() -> None:
    window = window_of(
        event(NOW - 3 * MINUTE, "add_to_cart", "a", price=80.0),
        event(NOW - 2 * MINUTE, "add_to_cart", "b", price=50.0),
        event(NOW - 1 * MINUTE, "add_to_cart", "c"),
    )
    assert check({"cart_value": {"at_least": 130}}, window) == HOLDS
    assert check({"cart_value": {"at_least": 100, "at_most": 120}}, window) is None
    assert check({"cart_items": {"at_least": 3}}, window) == HOLDS
    assert check({"cart_items": {"at_most": 2}}, window) is None
    emptied = window_of(event(NOW - 2 * MINUTE, "add_to_cart", "a", price=80.0),
                        event(NOW - 1 * MINUTE, "remove_from_cart", "a"))
    assert check({"cart_value": {"at_most": 0}}, emptied) == HOLDS


def test_last_item_by_id_and_category() -> None:
    window = window_of(
        event(NOW - 2 * MINUTE, "view", "a", category="shoes"),
        event(NOW - 1 * MINUTE, "view", "b"),
        event(NOW - 30_000, "search"),
    )
    catalog = FakeCatalog({"b": "phones"})
    assert check({"last_item": {"in": ["b", "z"]}}, window) == HOLDS
    assert check({"last_item": {"in": ["a"]}}, window) is None
    assert check({"last_item": {"category": "phones"}}, window, catalog=catalog) == HOLDS
    assert check({"last_item": {"category": "shoes"}}, window, catalog=catalog) is None
    assert check({"last_item": {"in": ["a"]}}, window_of()) is None


def test_context_tests_compare_as_text() -> None:
    assert check({"context": {"key": "device", "equals": "mobile"}}, device="mobile") == HOLDS
    assert check({"context": {"key": "device", "equals": "mobile"}}, device="desktop") is None
    assert check({"context": {"key": "device", "equals": "mobile"}}) is None
    assert check({"context": {"key": "page", "equals": 2}}, page="2") == HOLDS
    assert check({"context": {"key": "page", "equals": "2"}}, page=2.0) == HOLDS
    assert check({"context": {"key": "vip", "equals": True}}, vip="true") == HOLDS
    assert check({"context": {"key": "vip", "equals": True}}, vip=1) is None
    assert check({"context": {"key": "c", "in": ["spring", 7]}}, c=7) == HOLDS
    assert check({"context": {"key": "c", "in": ["spring", 7]}}, c="summer") is None
    assert check({"context": {"key": "ab", "exists": True}}, ab="b") == HOLDS
    assert check({"context": {"key": "ab", "exists": True}}, ab=None) is None
    assert check({"context": {"key": "ab", "exists": False}}) == HOLDS


# -- time of day ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "moment", "holds"),
    [
        ({"from": "18:00", "to": "23:30"}, at(2024, 3, 1, 18, 0), True),
        ({"from": "18:00", "to": "23:30"}, at(2024, 3, 1, 23, 30), False),
        ({"from": "18:00", "to": "23:30"}, at(2024, 3, 1, 17, 59), False),
        ({"from": "22:00", "to": "02:00"}, at(2024, 3, 1, 23, 0), True),
        ({"from": "22:00", "to": "02:00"}, at(2024, 3, 2, 1, 59), True),
        ({"from": "22:00", "to": "02:00"}, at(2024, 3, 2, 2, 0), False),
        ({"from": "22:00", "to": "24:00"}, at(2024, 3, 2, 23, 59), True),
        # 2024-03-01 is a Friday; the small hours of Saturday belong to Friday night
        ({"from": "22:00", "to": "02:00", "days": ["fri"]}, at(2024, 3, 2, 1, 0), True),
        ({"from": "22:00", "to": "02:00", "days": ["fri"]}, at(2024, 3, 2, 23, 0), False),
        ({"from": "22:00", "to": "02:00", "days": ["sat"]}, at(2024, 3, 2, 1, 0), False),
        ({"days": ["sat", "sun"]}, at(2024, 3, 2, 12, 0), True),
        ({"days": ["sat", "sun"]}, at(2024, 3, 1, 12, 0), False),
        # summer time: 19:30 in Berlin is 17:30 UTC
        ({"from": "19:00", "to": "20:00"}, at(2024, 7, 1, 19, 30), True),
    ],
)
def test_time_of_day_in_berlin(when: dict[str, Any], moment: int, holds: bool) -> None:
    found = check({"time_of_day": {**when, "timezone": "Europe/Berlin"}}, now_ms=moment)
    assert (found == HOLDS) is holds


def test_time_of_day_defaults_to_utc() -> None:
    utc = ZoneInfo("UTC")
    when = {"time_of_day": {"from": "09:00", "to": "10:00"}}
    assert check(when, now_ms=at(2024, 3, 1, 9, 30, utc)) == HOLDS
    assert check(when, now_ms=at(2024, 3, 1, 9, 30, BERLIN)) is None


def test_time_of_day_with_an_impossible_clock_does_not_hold() -> None:
    assert check({"time_of_day": {"days": ["mon"]}}, now_ms=10**20) is None


# -- combinators ---------------------------------------------------------------------------

VIEWED_TWICE = {"events": {"type": "view", "at_least": 2, "per_item": True}}
CARTED = {"events": {"type": "add_to_cart", "at_least": 1, "per_item": True}}


def _browsing() -> SessionWindow:
    return window_of(
        event(NOW - 6 * MINUTE, "view", "a"),
        event(NOW - 5 * MINUTE, "view", "a"),
        event(NOW - 4 * MINUTE, "view", "b"),
        event(NOW - 3 * MINUTE, "view", "b"),
        event(NOW - 2 * MINUTE, "add_to_cart", "b", price=5.0),
        event(NOW - 1 * MINUTE, "add_to_cart", "c", price=5.0),
    )


def test_all_intersects_the_bound_items() -> None:
    window = _browsing()
    assert check({"all": [VIEWED_TWICE, CARTED]}, window) == ("b",)
    # The intersection decides whether `all` holds, even when nobody uses the items.
    assert check({"all": [VIEWED_TWICE, CARTED]}, window, need_items=False) == HOLDS
    only_a_carted = window_of(
        event(NOW - 3 * MINUTE, "view", "a"), event(NOW - 2 * MINUTE, "view", "a"),
        event(NOW - 1 * MINUTE, "add_to_cart", "c", price=5.0),
    )
    assert check({"all": [VIEWED_TWICE, CARTED]}, only_a_carted) is None
    assert check({"all": [VIEWED_TWICE, CARTED]}, only_a_carted, need_items=False) is None
    device = {"context": {"key": "device", "equals": "mobile"}}
    assert check({"all": [device, VIEWED_TWICE]}, window, device="mobile") == ("b", "a")
    assert check({"all": [device, VIEWED_TWICE]}, window, device="tv") is None


def test_any_unites_the_bound_items() -> None:
    window = _browsing()
    assert check({"any": [VIEWED_TWICE, CARTED]}, window) == ("b", "a", "c")
    assert check({"any": [CARTED, {"cart_items": {"at_least": 9}}]}, window) == ("c", "b")
    # an alternative that holds for every item leaves $item unconstrained
    assert check({"any": [CARTED, {"cart_items": {"at_least": 1}}]}, window) == HOLDS
    assert check({"any": [{"cart_items": {"at_least": 9}}, {"last_item": {"in": ["z"]}}]},
                 window) is None


def test_not_and_nesting() -> None:
    window = _browsing()
    assert check({"not": {"cart_items": {"at_least": 9}}}, window) == HOLDS
    assert check({"not": VIEWED_TWICE}, window) is None
    assert check({"not": {"all": [VIEWED_TWICE, {"events": {"type": "purchase", "at_least": 1,
                                                             "per_item": True}}]}},
                 window) == HOLDS
    nested = {"all": [{"any": [VIEWED_TWICE, {"not": {"cart_items": {"at_least": 1}}}]},
                      {"not": {"last_item": {"in": ["a"]}}}, CARTED]}
    assert check(nested, window) == ("b",)
