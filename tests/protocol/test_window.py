from __future__ import annotations

from collections import Counter
from itertools import count
from typing import Any, Final

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from protocol.errors import FeatureContractError
from protocol.events import EVENT_TYPE_CODES, EVENT_TYPES, ITEM_EVENT_TYPES, Event, EventType
from protocol.window import (
    ADD_TO_CART,
    CLICK,
    IMPRESSION,
    N_TYPES,
    PURCHASE,
    SEARCH,
    VIEW,
    WINDOW_FORMAT,
    Entry,
    SessionWindow,
    WindowConfig,
)

START_MS: Final = 1_700_000_000_000
_event_numbers = count()


def make_event(
    event_type: EventType,
    ts: int,
    item: str | None = None,
    *,
    category: str | None = None,
    price: float | None = None,
    received_at: int | None = None,
    event_id: str | None = None,
) -> Event:
    return Event(
        event_id=event_id or f"evt-{next(_event_numbers):08d}",
        session_id="sess-1",
        type=event_type,
        ts=ts,
        item_id=item,
        items=(item or "shown",) if event_type == "impression" else None,
        query="shoes" if event_type == "search" else None,
        category=category,
        price=price,
        received_at=received_at,
    )


def recomputed_counters(window: SessionWindow) -> dict[str, Any]:
    """The counters as they must be: computed afresh from the window's entries."""
    type_counts = [0] * N_TYPES
    item_counts: Counter[str] = Counter()
    item_last_ts: dict[str, int] = {}
    category_counts: Counter[str] = Counter()
    for entry in window.entries:
        type_counts[entry.type] += 1
        if entry.item is not None:
            item_counts[entry.item] += 1
            item_last_ts[entry.item] = max(entry.ts, item_last_ts.get(entry.item, entry.ts))
            if entry.category is not None:
                category_counts[entry.category] += 1
    return {
        "type_counts": type_counts,
        "item_counts": dict(item_counts),
        "item_last_ts": item_last_ts,
        "category_counts": dict(category_counts),
    }


def counters_of(window: SessionWindow) -> dict[str, Any]:
    return {
        "type_counts": list(window.type_counts),
        "item_counts": dict(window.item_counts),
        "item_last_ts": dict(window.item_last_ts),
        "category_counts": dict(window.category_counts),
    }


def observable(window: SessionWindow) -> dict[str, Any]:
    """Everything a reader of the window can see, except duplicate detection."""
    return {
        "session_id": window.session_id,
        "entries": list(window.entries),
        **counters_of(window),
        "carted": dict(window.carted),
        "bought": set(window.bought),
        "first_ts": window.first_ts,
        "last_ts": window.last_ts,
        "last_item": window.last_item,
        "recent_items": window.recent_items(),
        "cart_value": window.cart_value(),
        "length": len(window),
    }


# -- the window against a model, under random sequences of events -------------------------

ITEMS: Final = st.sampled_from(["a", "b", "c", "d", "e"])
CATEGORIES: Final = st.none() | st.sampled_from(["shoes", "hats", "bags"])
PRICES: Final = st.none() | st.sampled_from([0.0, 9.5, 20.0, 120.0])
# Mostly forwards, sometimes backwards, now and then a jump past any span.
CLOCK_STEPS: Final = st.one_of(
    st.integers(0, 2_000),
    st.integers(0, 2_000),
    st.integers(0, 2_000),
    st.integers(-3_000, 0),
    st.integers(50_000, 200_000),
)


class WindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = WindowConfig()
        self.window = SessionWindow("sess-1", self.config)
        self.clock = START_MS
        self.expected_entries: list[Entry] = []
        self.expected_carted: dict[str, float | None] = {}
        self.expected_bought: set[str] = set()
        self.remembered: list[Event] = []

    @initialize(span_ms=st.sampled_from([1_000, 5_000, 60_000]),
                max_events=st.sampled_from([1, 3, 5, 50]))
    def start(self, span_ms: int, max_events: int) -> None:
        self.config = WindowConfig(span_ms=span_ms, max_events=max_events)
        self.window = SessionWindow("sess-1", self.config)

    @rule(
        event_type=st.sampled_from(EVENT_TYPES),
        item=ITEMS,
        category=CATEGORIES,
        price=PRICES,
        step=CLOCK_STEPS,
        client_ts=st.none() | st.integers(0, 2 * START_MS),
    )
    def add_event(
        self,
        event_type: EventType,
        item: str,
        category: str | None,
        price: float | None,
        step: int,
        client_ts: int | None,
    ) -> None:
        self.clock += step
        # With a client time of its own, the event carries the edge's receive time as well.
        event = make_event(
            event_type,
            self.clock if client_ts is None else client_ts,
            item if event_type in ITEM_EVENT_TYPES else None,
            category=category,
            price=price,
            received_at=None if client_ts is None else self.clock,
        )
        assert self.window.add(event) is True
        self._remember(event)
        if event_type == "impression":
            assert list(self.window.entries) == self.expected_entries
            return
        entry = Entry(self.clock, EVENT_TYPE_CODES[event_type], event.item_id, category, price)
        self.expected_entries.append(entry)
        horizon = self.clock - self.config.span_ms
        while self.expected_entries and (
            self.expected_entries[0].ts < horizon
            or len(self.expected_entries) > self.config.max_events
        ):
            self.expected_entries.pop(0)
        assert list(self.window.entries) == self.expected_entries
        assert self.window.entries[-1] == entry
        self._update_expected_cart(event)

    @precondition(lambda self: bool(self.remembered))
    @rule(data=st.data())
    def repeat_an_event(self, data: st.DataObject) -> None:
        event = data.draw(st.sampled_from(self.remembered))
        before = observable(self.window)
        saved = self.window.to_msgpack()
        assert self.window.add(event) is False
        assert observable(self.window) == before
        assert self.window.to_msgpack() == saved

    @rule()
    def store_and_restore(self) -> None:
        saved = self.window.to_msgpack()
        restored = SessionWindow.from_msgpack(saved, self.config)
        assert observable(restored) == observable(self.window)
        assert restored.to_msgpack() == saved
        self.window = restored

    @invariant()
    def counters_match_the_entries(self) -> None:
        assert counters_of(self.window) == recomputed_counters(self.window)

    @invariant()
    def window_stays_within_its_limits(self) -> None:
        assert len(self.window) <= self.config.max_events
        assert self.window.type_counts[IMPRESSION] == 0
        assert all(value > 0 for value in self.window.item_counts.values())
        assert all(value > 0 for value in self.window.category_counts.values())

    @invariant()
    def cart_follows_the_events(self) -> None:
        assert self.window.carted == self.expected_carted
        assert self.window.bought == self.expected_bought

    @invariant()
    def recent_event_ids_are_remembered(self) -> None:
        assert all(self.window.has_seen(event.event_id) for event in self.remembered)

    def _remember(self, event: Event) -> None:
        self.remembered.append(event)
        del self.remembered[: -2 * self.config.max_events]

    def _update_expected_cart(self, event: Event) -> None:
        item = event.item_id
        if item is None:
            return
        if event.type == "add_to_cart":
            self.expected_carted[item] = event.price
        elif event.type == "remove_from_cart":
            self.expected_carted.pop(item, None)
        elif event.type == "purchase":
            self.expected_carted.pop(item, None)
            self.expected_bought.add(item)


WindowMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestWindowMachine = WindowMachine.TestCase


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(EVENT_TYPES), ITEMS, CATEGORIES, st.integers(-5_000, 5_000)),
        max_size=60,
    ),
    max_events=st.integers(1, 8),
)
def test_counters_equal_a_recomputation_after_every_add(
    steps: list[tuple[EventType, str, str | None, int]], max_events: int
) -> None:
    window = SessionWindow("s", WindowConfig(span_ms=4_000, max_events=max_events))
    clock = START_MS
    for event_type, item, category, step in steps:
        clock += step
        window.add(make_event(event_type, clock, item, category=category))
        assert counters_of(window) == recomputed_counters(window)


# -- specific behaviour ---------------------------------------------------------------------


def test_empty_window() -> None:
    window = SessionWindow("s")
    assert len(window) == 0
    assert window.first_ts is None
    assert window.last_ts is None
    assert window.last_item is None
    assert window.recent_items() == []
    assert window.cart_value() == 0
    assert window.type_counts == [0] * N_TYPES
    assert window.config == WindowConfig(span_ms=30 * 60 * 1000, max_events=50)


def test_events_older_than_the_span_expire() -> None:
    window = SessionWindow("s", WindowConfig(span_ms=1_000))
    window.add(make_event("view", 10_000, "a", category="hats"))
    window.add(make_event("view", 10_500, "b"))
    window.add(make_event("click", 11_200, "c"))
    assert [entry.item for entry in window.entries] == ["b", "c"]
    assert window.item_counts == {"b": 1, "c": 1}
    assert window.category_counts == {}
    assert window.type_counts[VIEW] == 1
    assert window.type_counts[CLICK] == 1
    assert (window.first_ts, window.last_ts) == (10_500, 11_200)


def test_event_exactly_one_span_old_is_kept() -> None:
    window = SessionWindow("s", WindowConfig(span_ms=1_000))
    window.add(make_event("view", 10_000, "a"))
    window.add(make_event("view", 11_000, "b"))
    assert [entry.item for entry in window.entries] == ["a", "b"]
    window.add(make_event("view", 11_001, "c"))
    assert [entry.item for entry in window.entries] == ["b", "c"]


def test_expire_can_be_called_with_the_current_time() -> None:
    window = SessionWindow("s", WindowConfig(span_ms=1_000))
    window.add(make_event("view", 10_000, "a"))
    window.add(make_event("view", 10_600, "b"))
    window.expire(11_300)
    assert [entry.item for entry in window.entries] == ["b"]
    window.expire(20_000)
    assert len(window) == 0
    assert counters_of(window) == recomputed_counters(window)
    assert window.item_last_ts == {}


def test_only_the_newest_max_events_are_kept() -> None:
    window = SessionWindow("s", WindowConfig(max_events=3))
    for offset, item in enumerate("abcde"):
        window.add(make_event("view", START_MS + offset, item, category="hats"))
    assert [entry.item for entry in window.entries] == ["c", "d", "e"]
    assert window.type_counts[VIEW] == 3
    assert window.category_counts == {"hats": 3}
    assert window.first_ts == START_MS + 2


def test_duplicate_event_id_is_refused_and_changes_nothing() -> None:
    window = SessionWindow("s")
    event = make_event("add_to_cart", START_MS, "a", price=5.0)
    assert window.add(event) is True
    saved = window.to_msgpack()
    assert window.add(event) is False
    retry = make_event("purchase", START_MS + 5, "b", event_id=event.event_id)
    assert window.add(retry) is False
    assert window.to_msgpack() == saved
    assert window.carted == {"a": 5.0}
    assert window.bought == set()


def test_duplicates_are_remembered_for_twice_max_events() -> None:
    window = SessionWindow("s", WindowConfig(max_events=2))
    first = make_event("view", START_MS, "a")
    window.add(first)
    for offset in range(1, 4):
        window.add(make_event("view", START_MS + offset, "b"))
    assert window.has_seen(first.event_id)
    assert window.add(first) is False
    window.add(make_event("view", START_MS + 4, "c"))
    assert not window.has_seen(first.event_id)


def test_impressions_do_not_enter_the_window_but_are_deduplicated() -> None:
    window = SessionWindow("s", WindowConfig(span_ms=1_000))
    window.add(make_event("view", 10_000, "a"))
    impression = make_event("impression", 50_000, "x")
    assert window.add(impression) is True
    assert [entry.item for entry in window.entries] == ["a"]  # nor does it expire anything
    assert window.type_counts[IMPRESSION] == 0
    assert "x" not in window.item_counts
    assert window.add(impression) is False


def test_search_counts_by_type_only() -> None:
    window = SessionWindow("s")
    window.add(make_event("search", START_MS, category="shoes"))
    assert window.type_counts[SEARCH] == 1
    assert window.item_counts == {}
    assert window.category_counts == {}
    assert window.last_item is None
    assert window.recent_items() == []


def test_cart_follows_add_remove_and_purchase() -> None:
    window = SessionWindow("s")
    window.add(make_event("add_to_cart", START_MS, "a", price=10.0))
    window.add(make_event("add_to_cart", START_MS + 1, "b"))
    window.add(make_event("add_to_cart", START_MS + 2, "c", price=2.5))
    assert window.carted == {"a": 10.0, "b": None, "c": 2.5}
    assert window.cart_value() == 12.5
    window.add(make_event("remove_from_cart", START_MS + 3, "a"))
    window.add(make_event("remove_from_cart", START_MS + 4, "never-carted"))
    assert window.carted == {"b": None, "c": 2.5}
    window.add(make_event("purchase", START_MS + 5, "c"))
    window.add(make_event("purchase", START_MS + 6, "d"))
    assert window.carted == {"b": None}
    assert window.bought == {"c", "d"}
    assert window.cart_value() == 0
    assert window.type_counts[ADD_TO_CART] == 3
    assert window.type_counts[PURCHASE] == 2


def test_adding_again_updates_the_carted_price() -> None:
    window = SessionWindow("s")
    window.add(make_event("add_to_cart", START_MS, "a", price=10.0))
    window.add(make_event("add_to_cart", START_MS + 1, "a", price=8.0))
    assert window.carted == {"a": 8.0}


def test_cart_and_purchases_outlive_their_events() -> None:
    window = SessionWindow("s", WindowConfig(span_ms=1_000))
    window.add(make_event("add_to_cart", 10_000, "a", price=3.0))
    window.add(make_event("purchase", 10_100, "b"))
    window.add(make_event("view", 60_000, "c"))
    assert [entry.item for entry in window.entries] == ["c"]
    assert window.carted == {"a": 3.0}
    assert window.bought == {"b"}


def test_recent_items_are_distinct_most_recent_first() -> None:
    window = SessionWindow("s")
    for offset, item in enumerate(["a", "b", "a", "c"]):
        window.add(make_event("view", START_MS + offset, item))
    window.add(make_event("search", START_MS + 10))
    assert window.recent_items() == ["c", "a", "b"]
    assert window.last_item == "c"
    assert window.item_counts == {"a": 2, "b": 1, "c": 1}
    assert window.item_last_ts == {"a": START_MS + 2, "b": START_MS + 1, "c": START_MS + 3}


def test_receive_time_is_used_over_client_time() -> None:
    window = SessionWindow("s", WindowConfig(span_ms=1_000))
    # A page whose clock is days behind must not expire its own session.
    window.add(make_event("view", 5, "a", received_at=START_MS))
    window.add(make_event("view", 6, "b", received_at=START_MS + 500))
    assert [entry.ts for entry in window.entries] == [START_MS, START_MS + 500]
    assert window.item_last_ts == {"a": START_MS, "b": START_MS + 500}
    window.add(make_event("view", START_MS + 10**9, "c", received_at=START_MS + 700))
    assert [entry.item for entry in window.entries] == ["a", "b", "c"]


def test_client_time_is_used_without_a_receive_time() -> None:
    window = SessionWindow("s")
    window.add(make_event("view", START_MS + 42, "a"))
    assert window.last_ts == START_MS + 42


def test_last_seen_time_of_an_item_follows_the_entries_left() -> None:
    # An older event arriving late stays; when the newer one leaves, the item's last-seen
    # time must be that of the entry still in the window, as a restored window has it.
    window = SessionWindow("s", WindowConfig(max_events=1))
    window.add(make_event("view", 1_000, "a"))
    window.add(make_event("view", 500, "a"))
    assert window.item_last_ts == {"a": 500}
    restored = SessionWindow.from_msgpack(window.to_msgpack(), window.config)
    assert restored.item_last_ts == window.item_last_ts


@pytest.mark.parametrize(
    ("span_ms", "max_events"), [(0, 50), (-1, 50), (1_000, 0), (1_000, 10_001)]
)
def test_bad_config_is_refused(span_ms: int, max_events: int) -> None:
    with pytest.raises(FeatureContractError):
        WindowConfig(span_ms=span_ms, max_events=max_events)


# -- serialisation --------------------------------------------------------------------------


def busy_window() -> SessionWindow:
    window = SessionWindow("sess-é", WindowConfig(span_ms=10_000, max_events=5))
    window.add(make_event("view", START_MS, "a", category="hats", price=12.0))
    window.add(make_event("add_to_cart", START_MS + 1, "a", category="hats", price=12.0))
    window.add(make_event("add_to_cart", START_MS + 2, "b"))
    window.add(make_event("impression", START_MS + 3, "z"))
    window.add(make_event("search", START_MS + 4))
    window.add(make_event("purchase", START_MS + 5, "b", price=3.0))
    window.add(make_event("click", START_MS + 6, "c", category="bags"))
    window.add(make_event("view", START_MS + 7, "a", received_at=START_MS + 8))
    return window


def test_msgpack_round_trip_keeps_everything_observable() -> None:
    window = busy_window()
    restored = SessionWindow.from_msgpack(window.to_msgpack(), window.config)
    assert observable(restored) == observable(window)
    assert restored.to_msgpack() == window.to_msgpack()
    assert restored.carted == {"a": 12.0}
    assert restored.bought == {"b"}


def test_restored_window_still_detects_duplicates() -> None:
    window = SessionWindow("s")
    events = [make_event("view", START_MS + n, "a") for n in range(3)]
    impression = make_event("impression", START_MS + 3, "x")
    for event in [*events, impression]:
        window.add(event)
    restored = SessionWindow.from_msgpack(window.to_msgpack())
    for event in [*events, impression]:
        assert restored.has_seen(event.event_id)
        assert restored.add(event) is False
    assert restored.add(make_event("view", START_MS + 4, "b")) is True


def test_restored_window_goes_on_like_the_original() -> None:
    window = busy_window()
    restored = SessionWindow.from_msgpack(window.to_msgpack(), window.config)
    later = [make_event("view", START_MS + 20_000 + n, item) for n, item in enumerate("xyz")]
    for event in later:
        window.add(event)
        restored.add(event)
    assert observable(restored) == observable(window)


def test_serialised_form() -> None:
    window = SessionWindow("s")
    event = make_event("add_to_cart", START_MS, "a", category="hats", price=2.0)
    window.add(event)
    assert msgpack.unpackb(window.to_msgpack()) == [
        WINDOW_FORMAT, "s", [[START_MS, ADD_TO_CART, "a", "hats", 2.0]], [event.event_id],
        [["a", 2.0]], [],
    ]


def pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


VALID_ENTRY: Final = [START_MS, VIEW, "a", "hats", 1.0]
MALFORMED_WINDOWS: Final = [
    b"",
    b"\xc1",
    pack(None),
    pack(1),
    pack("abcdef"),
    pack([]),
    pack([WINDOW_FORMAT, "s", [], [], []]),
    pack([WINDOW_FORMAT, "s", [], [], [], [], []]),
    pack([WINDOW_FORMAT + 1, "s", [], [], [], []]),
    pack([WINDOW_FORMAT, 7, [], [], [], []]),
    pack([WINDOW_FORMAT, b"s", [], [], [], []]),
    pack({"format": 1}),
    pack([WINDOW_FORMAT, "s", 5, [], [], []]),
    pack([WINDOW_FORMAT, "s", [VALID_ENTRY[:4]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [["1", VIEW, "a", None, None]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [[1.5, VIEW, "a", None, None]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [[START_MS, N_TYPES, "a", None, None]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [[START_MS, -1, "a", None, None]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [[START_MS, VIEW, 3, None, None]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [[START_MS, VIEW, "a", ["x"], None]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [[START_MS, VIEW, "a", None, "1.0"]], [], [], []]),
    pack([WINDOW_FORMAT, "s", [VALID_ENTRY], 3, [], []]),
    pack([WINDOW_FORMAT, "s", [VALID_ENTRY], [], [["a"]], []]),
    pack([WINDOW_FORMAT, "s", [VALID_ENTRY], [], [["a", [1]]], []]),
    pack([WINDOW_FORMAT, "s", [VALID_ENTRY], [], [["a", "cheap"]], []]),
    pack([WINDOW_FORMAT, "s", [VALID_ENTRY], [], 7, []]),
    pack([WINDOW_FORMAT, "s", [VALID_ENTRY], [], [], 7]),
    pack([WINDOW_FORMAT, "s", [], [], [], []]) + b"\x00",
]


@pytest.mark.parametrize("data", MALFORMED_WINDOWS)
def test_malformed_window_is_refused(data: bytes) -> None:
    with pytest.raises(FeatureContractError) as caught:
        SessionWindow.from_msgpack(data)
    assert caught.value.code == "bad_window"


MSGPACK_VALUES: Final = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)
ENTRY_LIKE: Final = st.lists(
    st.integers(-1, N_TYPES) | st.text(max_size=3) | st.none() | st.floats() | MSGPACK_VALUES,
    min_size=4,
    max_size=6,
)
WINDOW_LIKE: Final = st.tuples(
    st.sampled_from([WINDOW_FORMAT, 0, True, 1.0]) | MSGPACK_VALUES,
    st.text(max_size=5) | MSGPACK_VALUES,
    st.lists(ENTRY_LIKE | MSGPACK_VALUES, max_size=5) | MSGPACK_VALUES,
    st.lists(st.text(max_size=5) | MSGPACK_VALUES, max_size=5) | MSGPACK_VALUES,
    st.lists(st.lists(MSGPACK_VALUES, min_size=2, max_size=2) | MSGPACK_VALUES, max_size=3)
    | MSGPACK_VALUES,
    st.lists(st.text(max_size=5) | MSGPACK_VALUES, max_size=3) | MSGPACK_VALUES,
).map(list)


def check_restore(data: bytes) -> None:
    """Either a window that holds together, or FeatureContractError; nothing else."""
    try:
        window = SessionWindow.from_msgpack(data)
    except FeatureContractError as error:
        assert error.code == "bad_window"
        return
    assert counters_of(window) == recomputed_counters(window)
    saved = window.to_msgpack()
    assert SessionWindow.from_msgpack(saved).to_msgpack() == saved


@settings(max_examples=300)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_restore_or_raise_feature_contract_error(data: bytes) -> None:
    check_restore(data)


@settings(max_examples=300)
@given(value=MSGPACK_VALUES | WINDOW_LIKE)
def test_wrong_shapes_restore_or_raise_feature_contract_error(value: Any) -> None:
    check_restore(pack(value))
