"""A parsed, validated rules document, and the limits it was validated against.

Instances are only built by :mod:`edge_node.rules.parse`, which guarantees every invariant
noted here; the engine compiles them into evaluators and never re-checks them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

# The one variable of the language: the items bound by a ``per_item`` events condition.
BOUND_ITEM: Final = "$item"

MAX_DOCUMENT_BYTES: Final = 256 * 1024
MAX_NESTING: Final = 64  # of the JSON/YAML structure itself
MAX_RULES: Final = 500
MAX_ID_CHARS: Final = 64
MAX_DESCRIPTION_CHARS: Final = 1000
MAX_ITEM_ID_CHARS: Final = 128
MAX_NAME_CHARS: Final = 128  # categories, context values
MAX_LIST_ENTRIES: Final = 200  # item lists, `in` lists
MAX_SLOTS: Final = 64
MAX_ACTIONS: Final = 32
MAX_CONDITION_DEPTH: Final = 8  # all/any/not nested in one another
MAX_CHILDREN: Final = 64  # conditions in one all/any
MAX_COUNT: Final = 10_000
MAX_PRICE: Final = 1e12
MAX_PRIORITY: Final = 1_000_000
MIN_FACTOR: Final = 1e-3
MAX_FACTOR: Final = 1e3
MAX_POSITION: Final = 1000
MAX_WITHIN_MS: Final = 30 * 24 * 3600 * 1000
MAX_OFFER_PAYLOAD_BYTES: Final = 2048
MAX_OFFERS_PER_RESPONSE: Final = 10

EVENT_TYPE_NAMES: Final = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search")
DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

ContextValue = str | int | float | bool


# -- conditions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventsCondition:
    """Counts window events; ``types`` None means every type. At least one bound is set."""

    types: frozenset[str] | None
    item: str | None
    category: str | None
    within_ms: int | None
    at_least: int | None
    at_most: int | None
    per_item: bool


@dataclass(frozen=True, slots=True)
class CartValueCondition:
    at_least: float | None
    at_most: float | None


@dataclass(frozen=True, slots=True)
class CartItemsCondition:
    at_least: int | None
    at_most: int | None


@dataclass(frozen=True, slots=True)
class LastItemCondition:
    """Exactly one of ``items`` and ``category`` is set."""

    items: frozenset[str] | None
    category: str | None


@dataclass(frozen=True, slots=True)
class ContextCondition:
    """Exactly one of ``equals``, ``one_of`` and ``exists`` is set."""

    key: str
    equals: ContextValue | None
    one_of: tuple[ContextValue, ...] | None
    exists: bool | None


@dataclass(frozen=True, slots=True)
class TimeOfDayCondition:
    """Minutes after local midnight, ``start`` inclusive and ``end`` exclusive; both or none.

    ``days`` holds weekday numbers (Monday 0). A range that wraps midnight belongs to the
    day it starts on.
    """

    start_minute: int | None
    end_minute: int | None
    timezone: str
    days: frozenset[int] | None


@dataclass(frozen=True, slots=True)
class AllOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    condition: Condition


@dataclass(frozen=True, slots=True)
class Always:
    """The condition of a rule without ``when``."""


Condition = (
    EventsCondition | CartValueCondition | CartItemsCondition | LastItemCondition
    | ContextCondition | TimeOfDayCondition | AllOf | AnyOf | Not | Always
)


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selector:
    """Which candidates an action touches: those meeting every criterion that is set.

    ``items`` may contain :data:`BOUND_ITEM`. At least one criterion is set.
    """

    items: tuple[str, ...] | None = None
    category: str | None = None
    price_above: float | None = None
    price_below: float | None = None
    bought: bool = False
    in_cart: bool = False
    stock_below: int | None = None  # catalog stock known and below this
    attributes: tuple[tuple[str, ContextValue], ...] = ()  # catalog attributes equal to these


@dataclass(frozen=True, slots=True)
class Boost:
    selector: Selector
    factor: float


@dataclass(frozen=True, slots=True)
class Bury:
    selector: Selector


@dataclass(frozen=True, slots=True)
class Filter:
    selector: Selector


@dataclass(frozen=True, slots=True)
class Pin:
    item: str  # an item id or BOUND_ITEM
    position: int  # 1-based


@dataclass(frozen=True, slots=True)
class Inject:
    items: tuple[str, ...]  # may contain BOUND_ITEM
    position: int  # 1-based


@dataclass(frozen=True, slots=True)
class Offer:
    item: str | None  # an item id, BOUND_ITEM, or None for an offer about no item
    payload_json: str  # compact JSON of an object without the keys "rule" and "item"

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload_json)
        return value


Action = Boost | Bury | Filter | Pin | Inject | Offer


# -- documents -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str | None
    priority: int
    enabled: bool
    slots: frozenset[str] | None  # None: every slot, and requests without one
    when: Condition
    then: tuple[Action, ...]

    @property
    def uses_bound_item(self) -> bool:
        return any(action_uses_bound_item(action) for action in self.then)


@dataclass(frozen=True, slots=True)
class RulesDocument:
    version: str
    description: str | None
    rules: tuple[Rule, ...]  # in document order


def action_uses_bound_item(action: Action) -> bool:
    if isinstance(action, Boost | Bury | Filter):
        return action.selector.items is not None and BOUND_ITEM in action.selector.items
    if isinstance(action, Inject):
        return BOUND_ITEM in action.items
    return action.item == BOUND_ITEM


def always_binds(condition: Condition) -> bool:
    """Whether the condition, whenever it holds, binds at least one item to ``$item``."""
    if isinstance(condition, EventsCondition):
        return condition.per_item
    if isinstance(condition, AllOf):
        return any(always_binds(c) for c in condition.conditions)
    if isinstance(condition, AnyOf):
        return all(always_binds(c) for c in condition.conditions)
    return False
