"""The ``when`` of a rule: conditions and their combinators, into the model.

Part of :mod:`edge_node.rules.parse`; every error names the path of the offending value.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Final

import edge_node.rules.fields as f
from edge_node.rules.errors import RulesError
from edge_node.rules.model import (
    DAY_NAMES,
    EVENT_TYPE_NAMES,
    MAX_CHILDREN,
    MAX_CONDITION_DEPTH,
    MAX_COUNT,
    MAX_LIST_ENTRIES,
    MAX_PRICE,
    AllOf,
    AnyOf,
    CartItemsCondition,
    CartValueCondition,
    Condition,
    ContextCondition,
    EventsCondition,
    LastItemCondition,
    Not,
    TimeOfDayCondition,
)

CONDITION_KINDS: Final = (
    "all", "any", "not", "events", "cart_value", "cart_items", "last_item", "context",
    "time_of_day",
)
_TIMEZONE: Final = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
_FULL_DAY_NAMES: Final = (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
)
_DAY_NUMBERS: Final = {
    **{day: number for number, day in enumerate(DAY_NAMES)},
    **{day: number for number, day in enumerate(_FULL_DAY_NAMES)},
}


def parse_condition(raw: object, path: str, *, depth: int = 0) -> Condition:
    body = f.mapping(raw, path, "a condition", CONDITION_KINDS)
    if len(body) > 1:
        raise RulesError(
            f"a condition has exactly one kind; found {', '.join(body)}; "
            "combine conditions with all: [...] or any: [...]",
            code="conflicting_keys", path=path,
        )
    kind = f.only_one(body, CONDITION_KINDS, path, "a condition")
    value, sub = body[kind], f.join(path, kind)
    if kind in ("all", "any", "not"):
        if depth >= MAX_CONDITION_DEPTH:
            raise RulesError(
                f"all/any/not nest at most {MAX_CONDITION_DEPTH} deep", code="too_deep", path=sub
            )
        if kind == "not":
            return Not(parse_condition(value, sub, depth=depth + 1))
        entries = f.sequence(value, sub, f"{kind} (a list of conditions)", MAX_CHILDREN)
        children = tuple(
            parse_condition(v, f.index(sub, i), depth=depth + 1) for i, v in enumerate(entries)
        )
        return AllOf(children) if kind == "all" else AnyOf(children)
    if kind == "events":
        return _events(value, sub)
    if kind in ("cart_value", "cart_items"):
        body = f.mapping(value, sub, f"a {kind} condition", ("at_least", "at_most"))
        low, high = _bounds(body, sub, f"a {kind} condition", whole=kind == "cart_items")
        if kind == "cart_value":
            return CartValueCondition(low, high)
        return CartItemsCondition(_as_int(low), _as_int(high))
    if kind == "last_item":
        return _last_item(value, sub)
    if kind == "context":
        return _context(value, sub)
    return _time_of_day(value, sub)


def _events(raw: object, path: str) -> EventsCondition:
    body = f.mapping(raw, path, "an events condition",
                     ("type", "item", "category", "within", "at_least", "at_most", "per_item"))
    types = _event_types(body["type"], f.join(path, "type")) if "type" in body else None
    if "item" in body and "category" in body:
        raise RulesError("an events condition takes item or category, not both",
                         code="conflicting_keys", path=path)
    item = f.optional(body, path, "item", _condition_item)
    category = f.optional(body, path, "category", f.category)
    within = f.optional(body, path, "within", f.duration_ms)
    per_item = f.optional(body, path, "per_item", lambda v, at: f.flag(v, at, "per_item")) is True
    if types == frozenset({"search"}) and (item is not None or per_item):
        raise RulesError("search events carry no item; drop item/per_item or add other types",
                         code="bad_value", path=path)
    low, high = _bounds(body, path, "an events condition", whole=True)
    return EventsCondition(types, item, category, within, _as_int(low), _as_int(high), per_item)


def _event_types(raw: object, path: str) -> frozenset[str]:
    names = [raw] if isinstance(raw, str) else f.sequence(raw, path, "type", len(EVENT_TYPE_NAMES))
    checked: list[str] = []
    for position, value in enumerate(names):
        where = path if isinstance(raw, str) else f.index(path, position)
        if value == "impression":
            raise RulesError("impressions are not kept in the session window; allowed types: "
                             + ", ".join(EVENT_TYPE_NAMES), code="bad_value", path=where)
        if value not in EVENT_TYPE_NAMES:
            raise RulesError(f"unknown event type {f.describe(value)}; allowed: "
                             + ", ".join(EVENT_TYPE_NAMES), code="bad_value", path=where)
        checked.append(str(value))
    f.unique(checked, path)
    return frozenset(checked)


def _bounds(
    body: dict[str, object], path: str, what: str, *, whole: bool
) -> tuple[float | None, float | None]:
    """``at_least``/``at_most``: at least one, ordered; counts when ``whole``, else amounts."""
    found: dict[str, float] = {}
    for key in ("at_least", "at_most"):
        if key in body:
            where = f.join(path, key)
            found[key] = (f.integer(body[key], where, key, 0, MAX_COUNT) if whole
                          else f.number(body[key], where, key, 0.0, MAX_PRICE))
    if not found:
        raise RulesError(f"{what} needs at_least, at_most or both", code="missing_key", path=path)
    low, high = found.get("at_least"), found.get("at_most")
    if low is not None and high is not None and low > high:
        raise RulesError(f"at_least ({low:g}) is more than at_most ({high:g}); nothing can match",
                         code="bad_value", path=f.join(path, "at_most"))
    return low, high


def _condition_item(value: object, path: str) -> str:
    return f.item_id(value, path, allow_bound=False)


def _as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _last_item(raw: object, path: str) -> LastItemCondition:
    body = f.mapping(raw, path, "a last_item condition", ("in", "category"))
    key = f.only_one(body, ("in", "category"), path, "a last_item condition")
    if key == "in":
        ids = f.item_ids(body["in"], f.join(path, "in"), MAX_LIST_ENTRIES, allow_bound=False)
        return LastItemCondition(frozenset(ids), None)
    return LastItemCondition(None, f.category(body["category"], f.join(path, "category")))


def _context(raw: object, path: str) -> ContextCondition:
    body = f.mapping(raw, path, "a context condition", ("key", "equals", "in", "exists"),
                     required=("key",))
    key = f.token(body["key"], f.join(path, "key"), "a context key")
    test = f.only_one(body, ("equals", "in", "exists"), path, "a context condition")
    where = f.join(path, test)
    if test == "equals":
        return ContextCondition(key, f.context_value(body["equals"], where), None, None)
    if test == "in":
        entries = f.sequence(body["in"], where, "in", MAX_LIST_ENTRIES)
        values = tuple(f.context_value(v, f.index(where, i)) for i, v in enumerate(entries))
        return ContextCondition(key, None, values, None)
    return ContextCondition(key, None, None, f.flag(body["exists"], where, "exists"))


def _time_of_day(raw: object, path: str) -> TimeOfDayCondition:
    body = f.mapping(raw, path, "a time_of_day condition", ("from", "to", "timezone", "days"))
    start = end = None
    if "from" in body or "to" in body:
        if "from" not in body or "to" not in body:
            raise RulesError("from and to go together", code="missing_key", path=path)
        start = f.clock_minutes(body["from"], f.join(path, "from"), allow_midnight_end=False)
        end = f.clock_minutes(body["to"], f.join(path, "to"), allow_midnight_end=True)
        if start == end % (24 * 60):
            raise RulesError("from and to are the same time; leave both out for the whole day",
                             code="bad_value", path=f.join(path, "to"))
    elif "days" not in body:
        raise RulesError("a time_of_day condition needs from and to, days, or both",
                         code="missing_key", path=path)
    timezone = "UTC"
    if "timezone" in body:
        timezone = _timezone(body["timezone"], f.join(path, "timezone"))
    days = _days(body["days"], f.join(path, "days")) if "days" in body else None
    return TimeOfDayCondition(start, end, timezone, days)


def _timezone(raw: object, path: str) -> str:
    value = f.text(raw, path, "a time zone", 64)
    unknown = RulesError(f"unknown time zone {value!r}; use an IANA name like Europe/Berlin",
                         code="unknown_timezone", path=path)
    if not _TIMEZONE.fullmatch(value):
        raise unknown
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise unknown from exc
    return value


def _days(raw: object, path: str) -> frozenset[int]:
    entries = f.sequence(raw, path, "days", len(DAY_NAMES))
    numbers: list[str] = []
    for position, value in enumerate(entries):
        number = _DAY_NUMBERS.get(value.lower()) if isinstance(value, str) else None
        if number is None:
            raise RulesError(f"unknown day {f.describe(value)}; use {', '.join(DAY_NAMES)}",
                             code="bad_value", path=f.index(path, position))
        numbers.append(DAY_NAMES[number])
    f.unique(numbers, path)
    return frozenset(DAY_NAMES.index(day) for day in numbers)
