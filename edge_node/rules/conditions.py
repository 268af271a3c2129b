"""Conditions compiled into checks: small closures over a per-request :class:`Evaluation`.

A check returns ``None`` when its condition does not hold, :data:`HOLDS` (the empty tuple)
when it holds without constraining ``$item``, or the non-empty tuple of items it binds to
``$item``, most recently seen first. Across ``all`` the bound items intersect (the same
item must satisfy every ``per_item`` condition); across ``any`` they unite.

Whether a check must produce its bound items, or only whether it holds, is decided at
compile time, so a rule whose actions never say ``$item`` pays for no item lists.
"""

from __future__ import annotations

import sys
import zoneinfo
from typing import Final

from edge_node.rules.evaluation import HOLDS, Binding, Check, Evaluation
from edge_node.rules.model import (
    AllOf,
    Always,
    AnyOf,
    CartItemsCondition,
    CartValueCondition,
    Condition,
    ContextCondition,
    ContextValue,
    EventsCondition,
    LastItemCondition,
    Not,
    TimeOfDayCondition,
)
from protocol.window import (
    ADD_TO_CART,
    CLICK,
    PURCHASE,
    REMOVE_FROM_CART,
    SEARCH,
    VIEW,
)

__all__ = ["HOLDS", "TYPE_CODES", "Binding", "Check", "Evaluation", "can_bind", "compile_condition"]

TYPE_CODES: Final = {
    "view": VIEW, "click": CLICK, "add_to_cart": ADD_TO_CART,
    "remove_from_cart": REMOVE_FROM_CART, "purchase": PURCHASE, "search": SEARCH,
}
_NO_LIMIT: Final = sys.maxsize


def compile_condition(condition: Condition, *, need_items: bool) -> Check:
    """``need_items``: the caller uses the bound items, not only whether the condition holds."""
    if isinstance(condition, EventsCondition):
        return _per_item(condition, need_items) if condition.per_item else _count(condition)
    if isinstance(condition, AllOf):
        return _all(condition, need_items)
    if isinstance(condition, AnyOf):
        return _any(condition, need_items)
    if isinstance(condition, Not):
        inner = compile_condition(condition.condition, need_items=False)
        return lambda ev: HOLDS if inner(ev) is None else None
    if isinstance(condition, CartValueCondition):
        low, high = _limits(condition.at_least, condition.at_most)
        return lambda ev: HOLDS if low <= ev.window.cart_value() <= high else None
    if isinstance(condition, CartItemsCondition):
        low, high = _limits(condition.at_least, condition.at_most)
        return lambda ev: HOLDS if low <= len(ev.window.carted) <= high else None
    if isinstance(condition, LastItemCondition):
        return _last_item(condition)
    if isinstance(condition, ContextCondition):
        return _context(condition)
    if isinstance(condition, TimeOfDayCondition):
        return _time_of_day(condition)
    if isinstance(condition, Always):
        return lambda ev: HOLDS
    raise TypeError(f"not a condition: {condition!r}")


def can_bind(condition: Condition) -> bool:
    if isinstance(condition, EventsCondition):
        return condition.per_item
    if isinstance(condition, AllOf | AnyOf):
        return any(can_bind(c) for c in condition.conditions)
    return False


def _limits(low: float | None, high: float | None) -> tuple[float, float]:
    return (0 if low is None else low), (_NO_LIMIT if high is None else high)


# -- events --------------------------------------------------------------------------------

_ALL_CODES: Final = frozenset(TYPE_CODES.values())
_EARLIEST: Final = -(1 << 62)


def _count(condition: EventsCondition) -> Check:
    low, high = _limits(condition.at_least, condition.at_most)
    item, category, within = condition.item, condition.category, condition.within_ms
    if within is None and category is None:
        if item is None and condition.types is None:
            return lambda ev: HOLDS if low <= len(ev.window.entries) <= high else None
        if item is None:
            type_codes = tuple(sorted(TYPE_CODES[t] for t in condition.types or ()))

            def by_type(ev: Evaluation) -> Binding:
                counts = ev.window.type_counts
                return HOLDS if low <= sum(counts[code] for code in type_codes) <= high else None

            return by_type
        if condition.types is None:
            return lambda ev: HOLDS if low <= ev.window.item_counts.get(item, 0) <= high else None
    codes = _codes(condition)
    # Counting can stop once the answer is known: at `low` when there is no upper bound,
    # else one past `high`.
    enough = low if high == _NO_LIMIT else high + 1

    def scan(ev: Evaluation) -> Binding:
        horizon = _EARLIEST if within is None else ev.now_ms - within
        found = 0
        for ts, type_code, entry_item, entry_category, _ in reversed(ev.window.entries):
            if ts < horizon or type_code not in codes:
                continue
            if item is not None and entry_item != item:
                continue
            if category is not None and category != (
                entry_category if entry_category is not None or entry_item is None
                else ev.catalog.category_of(entry_item)
            ):
                continue
            found += 1
            if found >= enough:
                break
        return HOLDS if low <= found <= high else None

    return scan


def _per_item(condition: EventsCondition, need_items: bool) -> Check:
    low, high = _limits(condition.at_least, condition.at_most)
    item, category, within = condition.item, condition.category, condition.within_ms
    codes = _codes(condition)

    def check(ev: Evaluation) -> Binding:
        horizon = _EARLIEST if within is None else ev.now_ms - within
        counts: dict[str, int] = {}
        entries = ev.window.entries
        for ts, type_code, entry_item, entry_category, _ in entries:
            if entry_item is None or ts < horizon or type_code not in codes:
                continue
            if item is not None and entry_item != item:
                continue
            if category is not None and category != (
                entry_category if entry_category is not None
                else ev.catalog.category_of(entry_item)
            ):
                continue
            counts[entry_item] = counts.get(entry_item, 0) + 1
        bound = {name for name, count in counts.items() if low <= count <= high}
        if not bound:
            return None
        if not need_items:
            return HOLDS
        if len(bound) == 1:
            return tuple(bound)
        recent_first: dict[str, None] = {}
        for entry in reversed(entries):
            if entry.item in bound:
                recent_first[entry.item] = None
        return tuple(recent_first)

    return check


def _codes(condition: EventsCondition) -> frozenset[int]:
    if condition.types is None:
        return _ALL_CODES
    return frozenset(TYPE_CODES[t] for t in condition.types)


# -- combinators ---------------------------------------------------------------------------


def _all(condition: AllOf, need_items: bool) -> Check:
    # With two or more children that bind, the intersection decides whether `all` holds.
    intersect = sum(can_bind(c) for c in condition.conditions) >= 2
    children = tuple(
        compile_condition(c, need_items=(need_items or intersect) and can_bind(c))
        for c in condition.conditions
    )

    def check(ev: Evaluation) -> Binding:
        bound: tuple[str, ...] | None = None
        for child in children:
            found = child(ev)
            if found is None:
                return None
            if found:
                if bound is None:
                    bound = found
                else:
                    keep = set(found)
                    bound = tuple(item for item in bound if item in keep)
                    if not bound:
                        return None
        return bound if bound is not None and need_items else HOLDS

    return check


def _any(condition: AnyOf, need_items: bool) -> Check:
    children = tuple(compile_condition(c, need_items=need_items) for c in condition.conditions)

    def check(ev: Evaluation) -> Binding:
        union: tuple[str, ...] | None = None
        for child in children:
            found = child(ev)
            if found is None:
                continue
            if not found or not need_items:
                return HOLDS  # a child holding for every item leaves $item unconstrained
            if union is None:
                union = found
            else:
                have = set(union)
                union += tuple(item for item in found if item not in have)
        return union

    return check


# -- session and request -------------------------------------------------------------------


def _last_item(condition: LastItemCondition) -> Check:
    items, category = condition.items, condition.category

    def check(ev: Evaluation) -> Binding:
        for entry in reversed(ev.window.entries):
            if entry.item is not None:
                if items is not None:
                    return HOLDS if entry.item in items else None
                return HOLDS if ev.category_of(entry) == category else None
        return None

    return check


def context_text(value: str | int | float | bool | None) -> str | None:
    """Context values compare as text, so ``equals: 2`` matches both ``2`` and ``"2"``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _context(condition: ContextCondition) -> Check:
    key = condition.key
    if condition.exists is not None:
        exists = condition.exists
        return lambda ev: HOLDS if (ev.context.get(key) is not None) == exists else None
    values: tuple[ContextValue | None, ...] = (
        condition.one_of if condition.one_of is not None else (condition.equals,)
    )
    wanted = frozenset(context_text(v) for v in values) - {None}
    return lambda ev: HOLDS if context_text(ev.context.get(key)) in wanted else None


def _time_of_day(condition: TimeOfDayCondition) -> Check:
    zone = zoneinfo.ZoneInfo(condition.timezone)
    start, end, days = condition.start_minute, condition.end_minute, condition.days

    def check(ev: Evaluation) -> Binding:
        local = ev.local_time(zone)
        if local is None:
            return None
        weekday, minute = local
        if start is not None and end is not None:
            if start < end:
                if not start <= minute < end:
                    return None
            elif minute < end:
                weekday = (weekday - 1) % 7  # the small hours belong to the evening before
            elif minute < start:
                return None
        return HOLDS if days is None or weekday in days else None

    return check
