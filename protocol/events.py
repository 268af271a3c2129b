"""Event schema version 1: the one shape every producer sends.

``validate_event`` turns an untrusted mapping (from JSON or msgpack) into an
:class:`Event` or raises :class:`~protocol.errors.EventError` naming the field and the
rule it broke. The codecs in :mod:`protocol.codec` build on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from protocol.errors import EventError

SCHEMA_VERSION: Final = 1

EventType = Literal[
    "view", "click", "add_to_cart", "remove_from_cart", "purchase", "search", "impression"
]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)
EVENT_TYPE_CODES: Final[dict[str, int]] = {name: code for code, name in enumerate(EVENT_TYPES)}
ITEM_EVENT_TYPES: Final = frozenset(
    {"view", "click", "add_to_cart", "remove_from_cart", "purchase"}
)

MAX_EVENT_BYTES: Final = 4 * 1024
MAX_BATCH_EVENTS: Final = 500
MAX_BATCH_BYTES: Final = 512 * 1024
MAX_IMPRESSION_ITEMS: Final = 100
MAX_CONTEXT_KEYS: Final = 16
MAX_TS_MS: Final = 10**13  # year 2286: rejects seconds-vs-nanoseconds mix-ups

EVENT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Lone surrogates (JSON allows "\ud800") cannot be encoded as UTF-8 for msgpack or a response.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# The range msgpack can carry: a larger integer would fail when the event is sent on.
_MIN_WIRE_INT: Final = -(2**63)
_MAX_WIRE_INT: Final = 2**64 - 1

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    session_id: str
    type: EventType
    ts: int
    user_id: str | None = None
    item_id: str | None = None
    items: tuple[str, ...] | None = None
    request_id: str | None = None
    query: str | None = None
    category: str | None = None
    price: float | None = None
    context: Mapping[str, Scalar] | None = field(default=None, hash=False)
    # Stamped by the edge that accepted the event.
    received_at: int | None = None
    region: str | None = None
    node: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: every field that is set, nothing that is not."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "session_id": self.session_id,
            "type": self.type,
            "ts": self.ts,
        }
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = (
                    list(value)
                    if name == "items"
                    else (dict(value) if name == "context" else value)
                )
        return out


_OPTIONAL_FIELDS: Final = (
    "user_id",
    "item_id",
    "items",
    "request_id",
    "query",
    "category",
    "price",
    "context",
    "received_at",
    "region",
    "node",
)
KNOWN_FIELDS: Final = frozenset({"event_id", "session_id", "type", "ts", *_OPTIONAL_FIELDS})


def validate_event(raw: object) -> Event:
    """Checks one decoded event against schema v1 and returns it typed."""
    if not isinstance(raw, Mapping):
        raise EventError("an event must be an object", code="not_an_object")
    for key in raw:
        if key not in KNOWN_FIELDS:
            name = key if isinstance(key, str) and not _SURROGATE.search(key) else repr(key)
            raise EventError(f"unknown field {name[:64]!r}", code="unknown_field", field=name[:64])

    event_id = _required_str(raw, "event_id")
    if not EVENT_ID_PATTERN.fullmatch(event_id):
        raise EventError(
            "event_id must be 8-64 characters of A-Z a-z 0-9 _ -",
            code="bad_event_id",
            field="event_id",
        )
    event_type = _required_str(raw, "type")
    if event_type not in EVENT_TYPE_CODES:
        raise EventError(
            f"type must be one of {', '.join(EVENT_TYPES)}", code="bad_type", field="type"
        )
    ts = raw.get("ts")
    if ts is None:
        raise EventError("ts is required", code="missing_field", field="ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < MAX_TS_MS:
        raise EventError(
            "ts must be an integer count of milliseconds since the epoch", code="bad_ts", field="ts"
        )

    item_id = _optional_str(raw, "item_id", 128)
    if event_type in ITEM_EVENT_TYPES and item_id is None:
        raise EventError(
            f"item_id is required for {event_type}", code="missing_field", field="item_id"
        )
    items = _items(raw.get("items"))
    if event_type == "impression" and not items:
        raise EventError("items is required for impression", code="missing_field", field="items")
    query = _optional_str(raw, "query", 256)
    if event_type == "search" and query is None:
        raise EventError("query is required for search", code="missing_field", field="query")

    return Event(
        event_id=event_id,
        session_id=_required_str(raw, "session_id"),
        type=event_type,  # type: ignore[arg-type]
        ts=ts,
        user_id=_optional_str(raw, "user_id", 128),
        item_id=item_id,
        items=items,
        request_id=_optional_str(raw, "request_id", 128),
        query=query,
        category=_optional_str(raw, "category", 128),
        price=_price(raw.get("price")),
        context=_context(raw.get("context")),
        received_at=_optional_ts(raw.get("received_at")),
        region=_optional_token(raw, "region"),
        node=_optional_token(raw, "node"),
    )


def _required_str(raw: Mapping[str, object], name: str) -> str:
    value = raw.get(name)
    if value is None:
        raise EventError(f"{name} is required", code="missing_field", field=name)
    return _checked_str(value, name, 128, True)


def _optional_str(raw: Mapping[str, object], name: str, max_len: int) -> str | None:
    value = raw.get(name)
    return None if value is None else _checked_str(value, name, max_len, False)


def _checked_str(value: object, name: str, max_len: int, required: bool) -> str:
    if value is None and required:
        raise EventError(f"{name} is required", code="missing_field", field=name)
    if not isinstance(value, str):
        raise EventError(f"{name} must be a string", code="bad_field_type", field=name)
    if not 1 <= len(value) <= max_len:
        raise EventError(f"{name} must be 1-{max_len} characters", code="bad_length", field=name)
    if _CONTROL.search(value):
        raise EventError(
            f"{name} must not contain control characters", code="bad_chars", field=name
        )
    if _SURROGATE.search(value):
        raise EventError(f"{name} must be valid Unicode text", code="bad_chars", field=name)
    return value


def _optional_token(raw: Mapping[str, object], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise EventError(
            f"{name} must be 1-64 characters of A-Z a-z 0-9 _ -", code="bad_token", field=name
        )
    return value


def _optional_ts(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_TS_MS:
        raise EventError(
            "received_at must be milliseconds since the epoch", code="bad_ts", field="received_at"
        )
    return value


def _items(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise EventError("items must be a list of item ids", code="bad_field_type", field="items")
    if len(value) > MAX_IMPRESSION_ITEMS:
        raise EventError(
            f"items holds at most {MAX_IMPRESSION_ITEMS} ids", code="too_many_items", field="items"
        )
    return tuple(_checked_str(v, "items", 128, True) for v in value)


def _price(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError("price must be a number", code="bad_field_type", field="price")
    try:
        price = float(value)
    except OverflowError:
        price = math.inf
    if not math.isfinite(price) or price < 0:
        raise EventError("price must be a finite number >= 0", code="bad_price", field="price")
    return price


def _context(value: object) -> dict[str, Scalar] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise EventError("context must be an object", code="bad_field_type", field="context")
    if len(value) > MAX_CONTEXT_KEYS:
        raise EventError(
            f"context holds at most {MAX_CONTEXT_KEYS} keys", code="too_many_keys", field="context"
        )
    out: dict[str, Scalar] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 64 or _SURROGATE.search(key):
            raise EventError(
                "context keys must be strings of 1-64 characters of valid Unicode",
                code="bad_context",
                field="context",
            )
        if isinstance(item, str):
            if len(item) > 256:
                raise EventError(
                    f"context.{key} is longer than 256 characters",
                    code="bad_context",
                    field=f"context.{key}",
                )
            if _SURROGATE.search(item):
                raise EventError(
                    f"context.{key} must be valid Unicode text",
                    code="bad_context",
                    field=f"context.{key}",
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise EventError(
                    f"context.{key} must be finite", code="bad_context", field=f"context.{key}"
                )
        elif isinstance(item, int) and not _MIN_WIRE_INT <= item <= _MAX_WIRE_INT:
            raise EventError(
                f"context.{key} is out of the 64-bit integer range",
                code="bad_context",
                field=f"context.{key}",
            )
        elif item is not None and not isinstance(item, int | bool):
            raise EventError(
                f"context.{key} must be a scalar", code="bad_context", field=f"context.{key}"
            )
        out[key] = item
    return out
