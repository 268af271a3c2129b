from __future__ import annotations

import math
from typing import Any, Final, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import EventError, ProtocolError
from protocol.events import (
    EVENT_TYPE_CODES,
    EVENT_TYPES,
    ITEM_EVENT_TYPES,
    KNOWN_FIELDS,
    MAX_CONTEXT_KEYS,
    MAX_IMPRESSION_ITEMS,
    MAX_TS_MS,
    Event,
    EventType,
    validate_event,
)

# -- strategies for valid events (also used by the codec tests) ---------------------------

CONTROL_CHARACTERS: Final = "".join(chr(code) for code in [*range(0x20), 0x7F])


def texts(max_size: int, *, min_size: int = 1, controls: bool = False) -> st.SearchStrategy[str]:
    """Text that UTF-8 can carry; without control characters unless ``controls``."""
    alphabet = st.characters(
        codec="utf-8", exclude_characters=None if controls else CONTROL_CHARACTERS
    )
    return st.text(alphabet, min_size=min_size, max_size=max_size)


EVENT_IDS: Final = st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True)
TOKENS: Final = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
TIMESTAMPS: Final = st.integers(min_value=0, max_value=MAX_TS_MS - 1)
PRICES: Final = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
CONTEXT_VALUES: Final = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts(256, min_size=0, controls=True)
)
CONTEXTS: Final = st.dictionaries(
    texts(64, controls=True), CONTEXT_VALUES, max_size=MAX_CONTEXT_KEYS
)


T = TypeVar("T")


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    """Any event that schema v1 accepts, with every optional field sometimes set."""
    event_type: EventType = draw(st.sampled_from(EVENT_TYPES))
    item_ids = texts(128)
    item_id = draw(item_ids if event_type in ITEM_EVENT_TYPES else optional(item_ids))
    shown = st.lists(
        item_ids, min_size=1 if event_type == "impression" else 0, max_size=MAX_IMPRESSION_ITEMS
    ).map(tuple)
    items = draw(shown if event_type == "impression" else optional(shown))
    query = draw(texts(256) if event_type == "search" else optional(texts(256)))
    return Event(
        event_id=draw(EVENT_IDS),
        session_id=draw(texts(128)),
        type=event_type,
        ts=draw(TIMESTAMPS),
        user_id=draw(optional(texts(128))),
        item_id=item_id,
        items=items,
        request_id=draw(optional(texts(128))),
        query=query,
        category=draw(optional(texts(128))),
        price=draw(optional(PRICES)),
        context=draw(optional(CONTEXTS)),
        received_at=draw(optional(TIMESTAMPS)),
        region=draw(optional(TOKENS)),
        node=draw(optional(TOKENS)),
    )


def same_event(decoded: Event, original: Event) -> bool:
    """Equal and alike in every value's type too (``True`` is not ``1``, ``1`` is not ``1.0``)."""
    return decoded == original and repr(decoded) == repr(original)


# -- accepting ----------------------------------------------------------------------------

BASE_VIEW: Final[dict[str, Any]] = {
    "event_id": "evt-0001_ab",
    "session_id": "sess-1",
    "type": "view",
    "ts": 1_700_000_000_000,
    "item_id": "sku-1",
}
MISSING: Final = object()


def view_with(**changes: object) -> dict[str, Any]:
    """The base view event with fields replaced, or removed when given ``MISSING``."""
    raw = dict(BASE_VIEW)
    for name, value in changes.items():
        if value is MISSING:
            raw.pop(name, None)
        else:
            raw[name] = value
    return raw


@settings(max_examples=300)
@given(event=valid_events())
def test_valid_event_survives_its_wire_form(event: Event) -> None:
    assert same_event(validate_event(event.to_dict()), event)


@given(event=valid_events())
def test_wire_form_holds_exactly_the_fields_that_are_set(event: Event) -> None:
    wire = event.to_dict()
    assert set(wire) <= KNOWN_FIELDS
    assert {"event_id", "session_id", "type", "ts"} <= set(wire)
    assert all(value is not None for value in wire.values())
    if event.items is not None:
        assert wire["items"] == list(event.items)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_smallest_event_of_each_type(event_type: str) -> None:
    raw: dict[str, Any] = {"event_id": "abcdefgh", "session_id": "s", "type": event_type, "ts": 0}
    if event_type in ITEM_EVENT_TYPES:
        raw["item_id"] = "i"
    if event_type == "impression":
        raw["items"] = ["i"]
    if event_type == "search":
        raw["query"] = "q"
    event = validate_event(raw)
    assert event.type == event_type
    assert event.to_dict() == raw


def test_limits_are_inclusive() -> None:
    raw = {
        "event_id": "e" * 64,
        "session_id": "s" * 128,
        "user_id": "u" * 128,
        "type": "impression",
        "ts": MAX_TS_MS - 1,
        "items": ["i" * 128] * MAX_IMPRESSION_ITEMS,
        "request_id": "r" * 128,
        "query": "q" * 256,
        "category": "c" * 128,
        "price": 0,
        "context": {f"k{n}": "v" * 256 for n in range(MAX_CONTEXT_KEYS - 1)}
        | {"k" * 64: 2**64 - 1},
        "received_at": 0,
        "region": "r" * 64,
        "node": "n" * 64,
    }
    event = validate_event(raw)
    assert event.items is not None and len(event.items) == MAX_IMPRESSION_ITEMS
    assert event.context is not None and len(event.context) == MAX_CONTEXT_KEYS


def test_integer_price_becomes_a_float() -> None:
    event = validate_event(view_with(price=12))
    assert event.price == 12.0
    assert isinstance(event.price, float)


def test_context_keeps_scalars_of_every_kind() -> None:
    context = {"page": "/p/1", "retina": True, "width": 1280, "ratio": 1.5, "ref": None}
    event = validate_event(view_with(context=context))
    assert event.context == context
    assert repr(event.context) == repr(context)


def test_items_are_kept_in_order_as_a_tuple() -> None:
    event = validate_event(
        {**BASE_VIEW, "type": "impression", "items": ["b", "a", "b"], "request_id": "req-1"}
    )
    assert event.items == ("b", "a", "b")


def test_type_codes_follow_the_declared_order() -> None:
    assert [EVENT_TYPE_CODES[name] for name in EVENT_TYPES] == list(range(len(EVENT_TYPES)))
    assert set(EVENT_TYPES) == {
        "view", "click", "add_to_cart", "remove_from_cart", "purchase", "search", "impression"
    }


def test_events_are_hashable_and_frozen() -> None:
    event = validate_event(view_with(context={"a": 1}))
    assert hash(event) == hash(validate_event(view_with(context={"a": 2})))
    with pytest.raises(AttributeError):
        event.ts = 5  # type: ignore[misc]


# -- refusing -----------------------------------------------------------------------------

REJECTIONS: Final[list[tuple[str, dict[str, Any], str, str | None]]] = [
    # (what, the event, expected code, expected field)
    ("missing session_id", view_with(session_id=MISSING), "missing_field", "session_id"),
    ("null session_id", view_with(session_id=None), "missing_field", "session_id"),
    ("empty session_id", view_with(session_id=""), "bad_length", "session_id"),
    ("long session_id", view_with(session_id="s" * 129), "bad_length", "session_id"),
    ("numeric session_id", view_with(session_id=12), "bad_field_type", "session_id"),
    ("missing event_id", view_with(event_id=MISSING), "missing_field", "event_id"),
    ("short event_id", view_with(event_id="a" * 7), "bad_event_id", "event_id"),
    ("long event_id", view_with(event_id="a" * 65), "bad_event_id", "event_id"),
    ("event_id with a space", view_with(event_id="evt 00001"), "bad_event_id", "event_id"),
    ("event_id with a dot", view_with(event_id="evt.00001"), "bad_event_id", "event_id"),
    ("event_id with accents", view_with(event_id="évènement1"), "bad_event_id", "event_id"),
    ("numeric event_id", view_with(event_id=12345678), "bad_field_type", "event_id"),
    ("missing type", view_with(type=MISSING), "missing_field", "type"),
    ("unknown type", view_with(type="like"), "bad_type", "type"),
    ("type in capitals", view_with(type="VIEW"), "bad_type", "type"),
    ("numeric type", view_with(type=0), "bad_field_type", "type"),
    ("missing ts", view_with(ts=MISSING), "missing_field", "ts"),
    ("null ts", view_with(ts=None), "missing_field", "ts"),
    ("bool ts", view_with(ts=True), "bad_ts", "ts"),
    ("float ts", view_with(ts=1_700_000_000_000.0), "bad_ts", "ts"),
    ("fractional ts", view_with(ts=1.5), "bad_ts", "ts"),
    ("string ts", view_with(ts="1700000000000"), "bad_ts", "ts"),
    ("negative ts", view_with(ts=-1), "bad_ts", "ts"),
    ("ts too big", view_with(ts=MAX_TS_MS), "bad_ts", "ts"),
    ("ts in nanoseconds", view_with(ts=1_700_000_000_000_000_000), "bad_ts", "ts"),
    ("view without item_id", view_with(item_id=MISSING), "missing_field", "item_id"),
    ("empty item_id", view_with(item_id=""), "bad_length", "item_id"),
    ("long item_id", view_with(item_id="i" * 129), "bad_length", "item_id"),
    ("numeric item_id", view_with(item_id=42), "bad_field_type", "item_id"),
    ("impression without items",
     view_with(type="impression", item_id=MISSING), "missing_field", "items"),
    ("impression with no items",
     view_with(type="impression", items=[]), "missing_field", "items"),
    ("too many items", view_with(type="impression", items=["i"] * (MAX_IMPRESSION_ITEMS + 1)),
     "too_many_items", "items"),
    ("items as a string", view_with(type="impression", items="abc"), "bad_field_type", "items"),
    ("items as an object",
     view_with(type="impression", items={"a": 1}), "bad_field_type", "items"),
    ("numeric item in items", view_with(type="impression", items=["a", 1]),
     "bad_field_type", "items"),
    ("empty item in items", view_with(type="impression", items=[""]), "bad_length", "items"),
    ("null item in items", view_with(type="impression", items=[None]), "missing_field", "items"),
    ("search without query",
     view_with(type="search", item_id=MISSING), "missing_field", "query"),
    ("empty query", view_with(type="search", query=""), "bad_length", "query"),
    ("long query", view_with(type="search", query="q" * 257), "bad_length", "query"),
    ("negative price", view_with(price=-0.01), "bad_price", "price"),
    ("NaN price", view_with(price=math.nan), "bad_price", "price"),
    ("infinite price", view_with(price=math.inf), "bad_price", "price"),
    ("price beyond any float", view_with(price=10**400), "bad_price", "price"),
    ("string price", view_with(price="9.99"), "bad_field_type", "price"),
    ("bool price", view_with(price=True), "bad_field_type", "price"),
    ("context with too many keys",
     view_with(context={f"k{n}": n for n in range(MAX_CONTEXT_KEYS + 1)}),
     "too_many_keys", "context"),
    ("nested object in context", view_with(context={"device": {"w": 1}}),
     "bad_context", "context.device"),
    ("list in context", view_with(context={"tags": ["a"]}), "bad_context", "context.tags"),
    ("bytes in context", view_with(context={"blob": b"x"}), "bad_context", "context.blob"),
    ("NaN in context", view_with(context={"ratio": math.nan}), "bad_context", "context.ratio"),
    ("long text in context", view_with(context={"ref": "r" * 257}), "bad_context", "context.ref"),
    ("integer beyond 64 bits in context", view_with(context={"n": 2**64}),
     "bad_context", "context.n"),
    ("negative integer beyond 64 bits in context", view_with(context={"n": -(2**63) - 1}),
     "bad_context", "context.n"),
    ("empty context key", view_with(context={"": 1}), "bad_context", "context"),
    ("long context key", view_with(context={"k" * 65: 1}), "bad_context", "context"),
    ("non-string context key", view_with(context={1: 1}), "bad_context", "context"),
    ("context as a list", view_with(context=[["a", 1]]), "bad_field_type", "context"),
    ("unknown field", view_with(colour="red"), "unknown_field", "colour"),
    ("misspelt field", view_with(sessionId="s"), "unknown_field", "sessionId"),
    ("NUL in session_id", view_with(session_id="a\x00b"), "bad_chars", "session_id"),
    ("newline in item_id", view_with(item_id="sku\n1"), "bad_chars", "item_id"),
    ("DEL in query", view_with(type="search", query="shoes\x7f"), "bad_chars", "query"),
    ("escape in category", view_with(category="\x1b[31mred"), "bad_chars", "category"),
    ("tab in user_id", view_with(user_id="u\t1"), "bad_chars", "user_id"),
    ("lone surrogate in item_id", view_with(item_id="sku\ud800"), "bad_chars", "item_id"),
    ("lone surrogate in items", view_with(type="impression", items=["\udfff"]),
     "bad_chars", "items"),
    ("lone surrogate in context value", view_with(context={"ref": "\ud83d"}),
     "bad_context", "context.ref"),
    ("lone surrogate in context key", view_with(context={"\ud83d": 1}), "bad_context", "context"),
    ("long user_id", view_with(user_id="u" * 129), "bad_length", "user_id"),
    ("long request_id", view_with(request_id="r" * 129), "bad_length", "request_id"),
    ("long category", view_with(category="c" * 129), "bad_length", "category"),
    ("numeric category", view_with(category=3), "bad_field_type", "category"),
    ("numeric user_id", view_with(user_id=3), "bad_field_type", "user_id"),
    ("list request_id", view_with(request_id=["r"]), "bad_field_type", "request_id"),
    ("region with a dot", view_with(region="eu.west"), "bad_token", "region"),
    ("region with a wildcard", view_with(region="*"), "bad_token", "region"),
    ("empty node", view_with(node=""), "bad_token", "node"),
    ("numeric node", view_with(node=7), "bad_token", "node"),
    ("negative received_at", view_with(received_at=-1), "bad_ts", "received_at"),
    ("bool received_at", view_with(received_at=False), "bad_ts", "received_at"),
    ("float received_at", view_with(received_at=1.0), "bad_ts", "received_at"),
]


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [pytest.param(raw, code, field, id=what) for what, raw, code, field in REJECTIONS],
)
def test_malformed_event_is_refused_naming_the_rule_and_field(
    raw: dict[str, Any], code: str, field: str | None
) -> None:
    with pytest.raises(EventError) as caught:
        validate_event(raw)
    assert caught.value.code == code
    assert caught.value.field == field
    assert caught.value.status == 400
    assert caught.value.to_dict() == {"code": code, "message": str(caught.value), "field": field}


@pytest.mark.parametrize("event_type", sorted(ITEM_EVENT_TYPES))
def test_item_events_need_an_item_id(event_type: str) -> None:
    with pytest.raises(EventError) as caught:
        validate_event(view_with(type=event_type, item_id=MISSING))
    assert (caught.value.code, caught.value.field) == ("missing_field", "item_id")


@pytest.mark.parametrize("raw", [[], "event", 7, None, b"{}", ("a", 1)])
def test_non_object_is_refused(raw: object) -> None:
    with pytest.raises(EventError) as caught:
        validate_event(raw)
    assert caught.value.code == "not_an_object"
    assert caught.value.field is None
    assert caught.value.to_dict() == {"code": "not_an_object", "message": str(caught.value)}


def test_unknown_field_name_is_cut_short_and_kept_printable() -> None:
    with pytest.raises(EventError) as caught:
        validate_event(view_with(**{"x" * 500: 1}))
    assert caught.value.field == "x" * 64
    with pytest.raises(EventError) as caught:
        validate_event({**BASE_VIEW, "bad\ud800": 1})
    assert caught.value.code == "unknown_field"
    assert caught.value.field is not None
    caught.value.field.encode("utf-8")
    with pytest.raises(EventError) as caught:
        validate_event({**BASE_VIEW, b"raw": 1})  # type: ignore[misc]
    assert (caught.value.code, caught.value.field) == ("unknown_field", "b'raw'")


def test_event_error_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        validate_event({})


@given(event=valid_events(), name=st.sampled_from(sorted(KNOWN_FIELDS)))
def test_removing_a_field_refuses_only_required_ones(event: Event, name: str) -> None:
    raw = event.to_dict()
    raw.pop(name, None)
    required = {"event_id", "session_id", "type", "ts"}
    if event.type in ITEM_EVENT_TYPES:
        required.add("item_id")
    if event.type == "impression":
        required.add("items")
    if event.type == "search":
        required.add("query")
    if name in required:
        with pytest.raises(EventError) as caught:
            validate_event(raw)
        assert (caught.value.code, caught.value.field) == ("missing_field", name)
    else:
        assert validate_event(raw).to_dict() == raw
