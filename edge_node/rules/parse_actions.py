"""The ``then`` of a rule: actions and their selectors, into the model.

Part of :mod:`edge_node.rules.parse`; every error names the path of the offending value.
"""

from __future__ import annotations

import json
import math
from typing import Final

import edge_node.rules.fields as f
from edge_node.rules.errors import RulesError
from edge_node.rules.model import (
    MAX_FACTOR,
    MAX_LIST_ENTRIES,
    MAX_OFFER_PAYLOAD_BYTES,
    MAX_POSITION,
    MAX_PRICE,
    MIN_FACTOR,
    Action,
    Boost,
    Bury,
    ContextValue,
    Filter,
    Inject,
    Offer,
    Pin,
    Selector,
)

ACTION_KINDS: Final = ("boost", "bury", "pin", "filter", "inject", "offer")
SELECTOR_KEYS: Final = (
    "items", "item", "category", "price_above", "price_below", "bought", "in_cart",
    "stock_below", "attribute",
)
MAX_ATTRIBUTE_TESTS: Final = 8
MAX_STOCK: Final = 10**9
_MAX_PAYLOAD_NESTING: Final = 16


def parse_action(raw: object, path: str) -> Action:
    body = f.mapping(raw, path, "an action", ACTION_KINDS)
    if len(body) > 1:
        raise RulesError(
            f"an action has exactly one kind; found {', '.join(body)}; list them separately",
            code="conflicting_keys", path=path,
        )
    kind = f.only_one(body, ACTION_KINDS, path, "an action")
    value, sub = body[kind], f.join(path, kind)
    if kind == "boost":
        keys = (*SELECTOR_KEYS, "factor")
        selector = f.mapping(value, sub, "a boost", keys, required=("factor",))
        factor = f.number(selector["factor"], f.join(sub, "factor"), "factor", MIN_FACTOR,
                          MAX_FACTOR)
        return Boost(_selector(selector, sub, "a boost"), factor)
    if kind in ("bury", "filter"):
        selector = f.mapping(value, sub, f"a {kind}", SELECTOR_KEYS)
        return (Bury if kind == "bury" else Filter)(_selector(selector, sub, f"a {kind}"))
    if kind == "pin":
        body = f.mapping(value, sub, "a pin", ("item", "position"), required=("item",))
        return Pin(f.item_id(body["item"], f.join(sub, "item"), allow_bound=True),
                   _position(body, sub))
    if kind == "inject":
        body = f.mapping(value, sub, "an inject", ("items", "position"), required=("items",))
        items = f.item_ids(body["items"], f.join(sub, "items"), MAX_LIST_ENTRIES, allow_bound=True)
        return Inject(items, _position(body, sub))
    return _offer(value, sub)


def _position(body: dict[str, object], path: str) -> int:
    if "position" not in body:
        return 1
    return f.integer(body["position"], f.join(path, "position"), "position (1 is first)", 1,
                     MAX_POSITION)


def _selector(body: dict[str, object], path: str, what: str) -> Selector:
    if not any(key in body for key in SELECTOR_KEYS):
        raise RulesError(f"{what} needs at least one of: {', '.join(SELECTOR_KEYS)}",
                         code="missing_key", path=path)
    if "item" in body and "items" in body:
        raise RulesError(f"{what} takes item or items, not both", code="conflicting_keys",
                         path=path)
    items: tuple[str, ...] | None = None
    if "item" in body:
        items = (f.item_id(body["item"], f.join(path, "item"), allow_bound=True),)
    elif "items" in body:
        items = f.item_ids(body["items"], f.join(path, "items"), MAX_LIST_ENTRIES, allow_bound=True)
    category = f.optional(body, path, "category", f.category)
    above = _price(body, path, "price_above")
    below = _price(body, path, "price_below")
    if above is not None and below is not None and above >= below:
        raise RulesError(f"price_above ({above:g}) must be less than price_below ({below:g}); "
                         "no price is both", code="bad_value", path=f.join(path, "price_below"))
    stock_below = None
    if "stock_below" in body:
        stock_below = f.integer(body["stock_below"], f.join(path, "stock_below"), "stock_below",
                                1, MAX_STOCK)
    return Selector(items, category, above, below, _true_only(body, path, "bought"),
                    _true_only(body, path, "in_cart"), stock_below, _attributes(body, path))


def _attributes(body: dict[str, object], path: str) -> tuple[tuple[str, ContextValue], ...]:
    if "attribute" not in body:
        return ()
    sub = f.join(path, "attribute")
    raw = body["attribute"]
    if not isinstance(raw, dict) or not raw:
        raise RulesError("attribute must be a mapping of attribute names to values, e.g. "
                         "{colour: red}", code="bad_type", path=sub)
    if len(raw) > MAX_ATTRIBUTE_TESTS:
        raise RulesError(f"attribute tests at most {MAX_ATTRIBUTE_TESTS} attributes",
                         code="too_many", path=sub)
    return tuple(
        (f.token(name, sub, "an attribute name"), f.context_value(value, f.join(sub, str(name))))
        for name, value in raw.items()
    )


def _price(body: dict[str, object], path: str, key: str) -> float | None:
    return f.number(body[key], f.join(path, key), key, 0.0, MAX_PRICE) if key in body else None


def _true_only(body: dict[str, object], path: str, key: str) -> bool:
    if key not in body:
        return False
    if f.flag(body[key], f.join(path, key), key):
        return True
    raise RulesError(f"{key} takes only true; leave it out to ignore it", code="bad_value",
                     path=f.join(path, key))


def _action_item(value: object, path: str) -> str:
    return f.item_id(value, path, allow_bound=True)


def _offer(raw: object, path: str) -> Offer:
    body = f.mapping(raw, path, "an offer", ("item", "payload"), required=("payload",))
    item = f.optional(body, path, "item", _action_item)
    payload_path = f.join(path, "payload")
    payload = body["payload"]
    if not isinstance(payload, dict):
        raise RulesError(f"payload must be a mapping; found {f.describe(payload)}",
                         code="bad_type", path=payload_path)
    for reserved in ("rule", "item"):
        if reserved in payload:
            raise RulesError(f"payload cannot hold the key {reserved!r}: the engine adds it",
                             code="bad_value", path=f.join(payload_path, reserved))
    _check_json(payload, payload_path, 0)
    encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    size = len(encoded.encode())
    if size > MAX_OFFER_PAYLOAD_BYTES:
        raise RulesError(f"payload is {size} bytes as JSON; at most {MAX_OFFER_PAYLOAD_BYTES} "
                         "are allowed", code="too_large", path=payload_path)
    return Offer(item, encoded)


def _check_json(value: object, path: str, depth: int) -> None:
    if depth > _MAX_PAYLOAD_NESTING:
        raise RulesError(f"payload nests more than {_MAX_PAYLOAD_NESTING} levels",
                         code="too_deep", path=path)
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise RulesError(f"payload keys must be text; found {f.describe(key)}",
                                 code="bad_type", path=path)
            _check_json(inner, f.join(path, key[:64]), depth + 1)
    elif isinstance(value, list):
        for position, inner in enumerate(value):
            _check_json(inner, f.index(path, position), depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise RulesError("payload numbers must be finite", code="bad_value", path=path)
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise RulesError(f"payload values must be JSON (text, numbers, true/false, null, lists, "
                         f"mappings); found {f.describe(value)} - quote it", code="bad_type",
                         path=path)
