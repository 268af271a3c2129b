from __future__ import annotations

import json
from typing import Any, Final

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import (
    DecodedBatch,
    Rejection,
    decode_body,
    decode_msgpack_event,
    encode_json,
    encode_msgpack,
)
from protocol.errors import EventError
from protocol.events import (
    KNOWN_FIELDS,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_IMPRESSION_ITEMS,
    Event,
    validate_event,
)
from tests.protocol.test_events import BASE_VIEW, same_event, valid_events, view_with

# Events that fit the 4 KiB limit of the wire; most generated events do.
WIRE_EVENTS: Final = valid_events().filter(
    lambda event: len(encode_msgpack(event)) <= MAX_EVENT_BYTES
)
RELAXED: Final = settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


def relaxed(max_examples: int = 100) -> settings:
    return settings(RELAXED, max_examples=max_examples)


def json_array(events: list[Event]) -> bytes:
    return b"[" + b",".join(encode_json(event) for event in events) + b"]"


def msgpack_array(events: list[Event]) -> bytes:
    return msgpack_body([event.to_dict() for event in events])


def json_body(value: object) -> bytes:
    return json.dumps(value).encode()


def msgpack_body(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


# -- round trips --------------------------------------------------------------------------


@relaxed(max_examples=200)
@given(event=WIRE_EVENTS)
def test_msgpack_round_trip(event: Event) -> None:
    assert same_event(decode_msgpack_event(encode_msgpack(event)), event)


@relaxed(max_examples=200)
@given(event=WIRE_EVENTS)
def test_json_body_round_trip(event: Event) -> None:
    batch = decode_body(encode_json(event), "json")
    assert batch.single
    assert batch.rejections == []
    assert len(batch.events) == 1
    assert same_event(batch.events[0], event)


@relaxed()
@given(event=WIRE_EVENTS)
def test_msgpack_body_with_one_event(event: Event) -> None:
    batch = decode_body(encode_msgpack(event), "msgpack")
    assert batch.single
    assert batch.rejections == []
    assert len(batch.events) == 1
    assert same_event(batch.events[0], event)


@relaxed()
@given(events=st.lists(WIRE_EVENTS, min_size=1, max_size=12))
def test_batches_decode_to_the_same_list(events: list[Event]) -> None:
    for body, wire in ((json_array(events), "json"), (msgpack_array(events), "msgpack")):
        batch = decode_body(body, wire)  # type: ignore[arg-type]
        assert not batch.single
        assert batch.rejections == []
        assert len(batch.events) == len(events)
        assert all(map(same_event, batch.events, events))


@relaxed()
@given(event=WIRE_EVENTS)
def test_json_encoding_is_utf8_of_the_wire_form(event: Event) -> None:
    encoded = encode_json(event)
    assert json.loads(encoded.decode("utf-8")) == event.to_dict()


def test_json_keeps_non_ascii_text_as_utf8() -> None:
    event = validate_event(view_with(item_id="crème-brûlée", context={"locale": "fr-FR"}))
    encoded = encode_json(event)
    assert "crème-brûlée".encode() in encoded
    assert decode_body(encoded, "json").events == [event]


def test_msgpack_encoding_is_a_map_of_the_wire_form() -> None:
    event = validate_event(view_with(price=9.5, context={"page": "/p"}))
    assert msgpack.unpackb(encode_msgpack(event), raw=False) == event.to_dict()


# -- batch semantics ----------------------------------------------------------------------

GOOD_EVENTS: Final = [
    view_with(event_id=f"evt-{index:04d}-ok", item_id=f"sku-{index}") for index in range(3)
]


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_batch_keeps_good_events_and_reports_bad_ones_by_index(wire: str) -> None:
    raw_batch = [
        GOOD_EVENTS[0],
        view_with(session_id=None),
        GOOD_EVENTS[1],
        view_with(type="like"),
        "not an event",
        GOOD_EVENTS[2],
        view_with(price=-1),
    ]
    body = json_body(raw_batch) if wire == "json" else msgpack_body(raw_batch)
    batch = decode_body(body, wire)  # type: ignore[arg-type]
    assert not batch.single
    assert [event.event_id for event in batch.events] == [e["event_id"] for e in GOOD_EVENTS]
    assert [rejection.to_dict() for rejection in batch.rejections] == [
        {"index": 1, "code": "missing_field", "field": "session_id",
         "message": "session_id is required"},
        {"index": 3, "code": "bad_type", "field": "type",
         "message": batch.rejections[1].error.message},
        {"index": 4, "code": "not_an_object", "message": "an event must be an object"},
        {"index": 6, "code": "bad_price", "field": "price",
         "message": "price must be a finite number >= 0"},
    ]


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_single_bad_event_is_a_rejection_not_an_error(wire: str) -> None:
    raw = view_with(ts=True)
    body = json_body(raw) if wire == "json" else msgpack_body(raw)
    batch = decode_body(body, wire)  # type: ignore[arg-type]
    assert batch.single
    assert batch.events == []
    assert [(r.index, r.error.code, r.error.field) for r in batch.rejections] == [
        (0, "bad_ts", "ts")
    ]


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_all_bad_batch_returns_only_rejections(wire: str) -> None:
    raw_batch = [view_with(event_id="x"), view_with(item_id=None)]
    body = json_body(raw_batch) if wire == "json" else msgpack_body(raw_batch)
    batch = decode_body(body, wire)  # type: ignore[arg-type]
    assert batch.events == []
    assert [(r.index, r.error.code) for r in batch.rejections] == [
        (0, "bad_event_id"), (1, "missing_field")
    ]


def test_duplicates_in_a_batch_are_all_decoded() -> None:
    # Deduplication by event_id is the session window's and the consumers' job, not the codec's.
    batch = decode_body(json_body([BASE_VIEW, BASE_VIEW]), "json")
    assert len(batch.events) == 2


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_batch_of_the_largest_size_is_accepted(wire: str) -> None:
    raw_batch = [view_with(event_id=f"evt-{index:05d}") for index in range(MAX_BATCH_EVENTS)]
    body = json_body(raw_batch) if wire == "json" else msgpack_body(raw_batch)
    assert len(decode_body(body, wire).events) == MAX_BATCH_EVENTS  # type: ignore[arg-type]


OVERSIZED_EVENT: Final = view_with(
    type="impression", items=[f"{index:03d}" + "i" * 60 for index in range(100)]
)


def error_of(body: bytes, wire: str) -> EventError:
    with pytest.raises(EventError) as caught:
        decode_body(body, wire)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize("wire", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("body_of", "code"),
    [
        pytest.param(lambda encode: encode([]), "empty_batch", id="empty batch"),
        pytest.param(
            lambda encode: encode([BASE_VIEW] * (MAX_BATCH_EVENTS + 1)),
            "batch_too_large", id="too many events",
        ),
        pytest.param(lambda encode: b"", "empty_body", id="empty body"),
        pytest.param(lambda encode: encode(42), "not_an_object", id="number"),
        pytest.param(lambda encode: encode("event"), "not_an_object", id="string"),
        pytest.param(lambda encode: encode(None), "not_an_object", id="null"),
    ],
)
def test_bodies_that_are_not_batches(body_of: Any, code: str, wire: str) -> None:
    body = body_of(json_body if wire == "json" else msgpack_body)
    error = error_of(body, wire)
    assert error.code == code
    assert error.field is None
    assert set(error.to_dict()) == {"code", "message"}


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_body_over_512_kib_is_refused_before_parsing(wire: str) -> None:
    assert error_of(b"[" * (MAX_BATCH_BYTES + 1), wire).code == "body_too_large"
    padded = json_body([BASE_VIEW]).ljust(MAX_BATCH_BYTES + 1)
    assert error_of(padded, "json").code == "body_too_large"


def test_body_of_exactly_512_kib_is_parsed() -> None:
    body = json_body([BASE_VIEW]).ljust(MAX_BATCH_BYTES)
    assert len(decode_body(body, "json").events) == 1


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_event_over_4_kib_is_rejected_in_a_batch(wire: str) -> None:
    raw_batch = [BASE_VIEW, OVERSIZED_EVENT]
    assert len(msgpack_body(OVERSIZED_EVENT)) > MAX_EVENT_BYTES
    body = json_body(raw_batch) if wire == "json" else msgpack_body(raw_batch)
    batch = decode_body(body, wire)  # type: ignore[arg-type]
    assert len(batch.events) == 1
    assert [(r.index, r.error.code) for r in batch.rejections] == [(1, "event_too_large")]


def test_event_over_4_kib_is_refused_from_the_bus() -> None:
    with pytest.raises(EventError) as caught:
        decode_msgpack_event(msgpack_body(OVERSIZED_EVENT))
    assert caught.value.code == "event_too_large"


def impression_of_msgpack_size(size: int) -> dict[str, Any]:
    """An impression whose msgpack form is exactly ``size`` bytes."""
    for count in range(MAX_IMPRESSION_ITEMS):
        shown = [f"{index:03d}" + "i" * 97 for index in range(count)]
        for last_length in range(1, 129):
            raw = view_with(type="impression", items=[*shown, "l" * last_length])
            if len(msgpack_body(raw)) == size:
                return raw
    raise AssertionError(f"no impression packs to {size} bytes")


def test_event_of_exactly_4_kib_is_accepted_and_one_byte_more_is_not() -> None:
    largest = impression_of_msgpack_size(MAX_EVENT_BYTES)
    assert decode_msgpack_event(msgpack_body(largest)).to_dict() == largest
    assert len(decode_body(json_body([largest]), "json").events) == 1
    too_large = impression_of_msgpack_size(MAX_EVENT_BYTES + 1)
    with pytest.raises(EventError) as caught:
        decode_msgpack_event(msgpack_body(too_large))
    assert caught.value.code == "event_too_large"
    rejections = decode_body(json_body([too_large]), "json").rejections
    assert [(r.index, r.error.code) for r in rejections] == [(0, "event_too_large")]


@pytest.mark.parametrize(
    ("body", "wire", "code"),
    [
        (b"{", "json", "malformed_json"),
        (b"{'a': 1}", "json", "malformed_json"),
        (b'{"ts": NaN}', "json", "malformed_json"),
        (b'{"ts": Infinity}', "json", "malformed_json"),
        (b"[1, 2", "json", "malformed_json"),
        (b"\xff\xfe\x00", "json", "malformed_json"),
        (b"1" * 5000, "json", "malformed_json"),
        (b"[" * 100_000 + b"]" * 100_000, "json", "malformed_json"),
        (b"\xc1", "msgpack", "malformed_msgpack"),
        (b"\x92\x01", "msgpack", "malformed_msgpack"),
        (b"\x81\x01\x02", "msgpack", "malformed_msgpack"),
        (b"\xa3\xff\xfe\xfd", "msgpack", "malformed_msgpack"),
        (b"\x80\x80", "msgpack", "malformed_msgpack"),
        (b"\xdd\xff\xff\xff\xff", "msgpack", "malformed_msgpack"),
        (b"\x91" * 100_000, "msgpack", "malformed_msgpack"),
    ],
)
def test_malformed_bodies(body: bytes, wire: str, code: str) -> None:
    assert error_of(body, wire).code == code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "malformed_msgpack"),
        (b"\xc1", "malformed_msgpack"),
        (msgpack_body([BASE_VIEW]), "not_an_object"),
        (msgpack_body(view_with(ts=1.0)), "bad_ts"),
        (msgpack_body(view_with(item_id=b"sku-1")), "bad_field_type"),
        (msgpack_body(BASE_VIEW) + b"\x00", "malformed_msgpack"),
    ],
)
def test_bus_message_that_is_not_one_event(data: bytes, code: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_msgpack_event(data)
    assert caught.value.code == code


def test_rejection_to_dict_puts_the_index_first() -> None:
    rejection = Rejection(3, EventError("ts is required", code="missing_field", field="ts"))
    assert rejection.to_dict() == {
        "index": 3, "code": "missing_field", "message": "ts is required", "field": "ts"
    }


# -- arbitrary input ----------------------------------------------------------------------

# JSON can spell lone surrogates ("\ud800") and integers of any size; msgpack can carry neither.
JSON_TEXT: Final = st.lists(
    st.characters(exclude_categories=["Cc"]) | st.characters(categories=["Cs"]), max_size=12
).map("".join) | st.text(max_size=40)
JSON_SCALARS: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([2**64, -(2**63) - 1, 10**400]),
    st.floats(),
    JSON_TEXT,
    JSON_TEXT,
)
JSON_VALUES: Final = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(JSON_TEXT, children, max_size=6),
    max_leaves=30,
)
MSGPACK_SCALARS: Final = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
)
MSGPACK_VALUES: Final = st.recursive(
    MSGPACK_SCALARS,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=12) | st.binary(max_size=4), children, max_size=6),
    max_leaves=30,
)


def event_like(
    scalars: st.SearchStrategy[Any], values: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """A valid event with one field (or a few, or an unknown one) set to an arbitrary value,
    so that most input gets past the first checks to the later ones."""
    field_values = st.one_of(
        scalars, values, st.dictionaries(st.text(max_size=8), scalars, max_size=4)
    )
    known_fields = st.sampled_from(sorted(KNOWN_FIELDS))
    changes = st.one_of(
        st.tuples(known_fields, field_values).map(lambda change: dict([change])),
        st.dictionaries(known_fields, field_values, max_size=3),
        st.dictionaries(st.text(max_size=8), values, min_size=1, max_size=1),
    )
    return st.builds(lambda event, changed: {**event.to_dict(), **changed}, WIRE_EVENTS, changes)


def check_outcome(decode: Any) -> None:
    """Either a batch of checked events and well-formed rejections, or an EventError."""
    try:
        outcome = decode()
    except EventError as error:
        body = error.to_dict()
        assert {"code", "message"} <= set(body)
        json.dumps(body, ensure_ascii=False).encode()
        return
    if isinstance(outcome, Event):
        assert validate_event(outcome.to_dict()) == outcome
        return
    assert isinstance(outcome, DecodedBatch)
    for event in outcome.events:
        assert isinstance(event, Event)
        assert len(encode_msgpack(event)) <= MAX_EVENT_BYTES
        encode_json(event)
    indexes = [rejection.index for rejection in outcome.rejections]
    assert indexes == sorted(set(indexes))
    for rejection in outcome.rejections:
        body = rejection.to_dict()
        assert {"index", "code", "message"} <= set(body)
        json.dumps(body, ensure_ascii=False).encode()
    if outcome.single:
        assert len(outcome.events) + len(outcome.rejections) == 1


@settings(max_examples=300)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_another_error(data: bytes) -> None:
    check_outcome(lambda: decode_body(data, "json"))
    check_outcome(lambda: decode_body(data, "msgpack"))
    check_outcome(lambda: decode_msgpack_event(data))


@relaxed(max_examples=300)
@given(
    value=JSON_VALUES
    | event_like(JSON_SCALARS, JSON_VALUES)
    | st.lists(event_like(JSON_SCALARS, JSON_VALUES), max_size=4)
)
def test_arbitrary_json_never_escapes_as_another_error(value: Any) -> None:
    try:
        body = json.dumps(value).encode()
    except ValueError:  # an integer too long for str(), refused before it reaches us
        return
    check_outcome(lambda: decode_body(body, "json"))


@relaxed(max_examples=300)
@given(
    value=MSGPACK_VALUES
    | event_like(MSGPACK_SCALARS, MSGPACK_VALUES)
    | st.lists(event_like(MSGPACK_SCALARS, MSGPACK_VALUES), max_size=4)
)
def test_arbitrary_msgpack_never_escapes_as_another_error(value: Any) -> None:
    body = msgpack_body(value)
    check_outcome(lambda: decode_body(body, "msgpack"))
    check_outcome(lambda: decode_msgpack_event(body))


@pytest.mark.parametrize(
    "body",
    [
        json_body(view_with(price=10**400)),
        b'{"event_id":"abcdefgh","session_id":"s","type":"view","ts":1,"item_id":"\\ud800"}',
        b'{"event_id":"abcdefgh","session_id":"s","type":"view","ts":1,"item_id":"a",'
        b'"context":{"n":18446744073709551616}}',
        b'{"event_id":"abcdefgh","session_id":"s","type":"view","ts":1,"item_id":"a",'
        b'"context":{"\\udc00":1}}',
        b'{"event_id":"abcdefgh","session_id":"s","type":"view","ts":1,"item_id":"a",'
        b'"\\udc00":1}',
    ],
    ids=["huge integer price", "lone surrogate", "integer beyond msgpack",
         "surrogate context key", "surrogate field name"],
)
def test_json_that_msgpack_cannot_carry_is_rejected_not_raised(body: bytes) -> None:
    batch = decode_body(body, "json")
    assert batch.events == []
    assert len(batch.rejections) == 1
    json.dumps(batch.rejections[0].to_dict(), ensure_ascii=False).encode()
