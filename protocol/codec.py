"""Wire codecs for events: JSON from browsers, msgpack from servers and on the bus.

Pure functions over bytes. Decoding a request body never raises for one bad event in a
batch: it returns the good events and a rejection per bad one, so the caller can keep
the good ones (DESIGN §2). A body that is not a batch at all raises :class:`EventError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from protocol.errors import EventError
from protocol.events import (
    EVENT_ID_PATTERN,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    Event,
    validate_event,
)

WireFormat = Literal["json", "msgpack"]


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: EventError

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, **self.error.to_dict()}


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    single: bool = False  # the body was one event, not an array


def encode_msgpack(event: Event) -> bytes:
    packed: bytes = msgpack.packb(event.to_dict(), use_bin_type=True)
    return packed


def encode_json(event: Event) -> bytes:
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def decode_msgpack_event(data: bytes) -> Event:
    """One event as it travels on the bus (``events.<region>.<node>``)."""
    if len(data) > MAX_EVENT_BYTES:
        raise EventError(f"an event is at most {MAX_EVENT_BYTES} bytes", code="event_too_large")
    return validate_event(_unpack(data))


def event_id_of(data: bytes) -> str | None:
    """The ``event_id`` of an encoded event that was validated before, without validating
    the rest; None when the bytes do not read as an event map with a valid id."""
    try:
        raw = msgpack.unpackb(data, raw=False)
    except Exception:  # any malformed input: the caller decodes fully to say what is wrong
        return None
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    if isinstance(event_id, str) and EVENT_ID_PATTERN.fullmatch(event_id):
        return event_id
    return None


def decode_body(data: bytes, wire: WireFormat) -> DecodedBatch:
    """A request body holding one event (an object) or a batch (an array)."""
    if len(data) > MAX_BATCH_BYTES:
        raise EventError(
            f"a request body is at most {MAX_BATCH_BYTES} bytes", code="body_too_large"
        )
    if not data:
        raise EventError("the request body is empty", code="empty_body")
    raw = _unpack(data) if wire == "msgpack" else _parse_json(data)
    if isinstance(raw, dict):
        return _decode_items([raw], single=True)
    if isinstance(raw, list):
        if not raw:
            raise EventError("the batch is empty", code="empty_batch")
        if len(raw) > MAX_BATCH_EVENTS:
            raise EventError(
                f"a batch holds at most {MAX_BATCH_EVENTS} events", code="batch_too_large"
            )
        return _decode_items(raw, single=False)
    raise EventError("the body must be an event object or an array of events", code="not_an_object")


def _decode_items(items: list[Any], *, single: bool) -> DecodedBatch:
    batch = DecodedBatch(single=single)
    for index, item in enumerate(items):
        try:
            event = validate_event(item)
            if len(encode_msgpack(event)) > MAX_EVENT_BYTES:
                raise EventError(
                    f"an event is at most {MAX_EVENT_BYTES} bytes", code="event_too_large"
                )
        except EventError as exc:
            batch.rejections.append(Rejection(index, exc))
        else:
            batch.events.append(event)
    return batch


def _unpack(data: bytes) -> Any:
    try:
        # unpackb takes no max_buffer_size (passing one is a TypeError on every call); it
        # already bounds every length by len(data), which the callers have limited.
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise EventError("the body is not valid msgpack", code="malformed_msgpack") from exc


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (
        ValueError,
        RecursionError,
    ) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise EventError("the body is not valid JSON", code="malformed_json") from exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
