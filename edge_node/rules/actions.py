"""Actions compiled into steps that record into a per-request :class:`Plan`.

Fired rules only record what they want (in priority order); :meth:`Plan.finish` then
builds the answer in fixed stages, so the outcome does not depend on how actions of
different kinds interleave:

1. ``filter`` removes matching items; nothing can bring a filtered item back.
2. ``boost`` multiplies scores, then candidates are re-sorted by score (stable).
3. ``bury`` moves matching items to the end, keeping their relative order.
4. ``pin`` and ``inject`` claim positions in rule order; a taken position passes the
   claim on to the next free one; an ``inject`` skips items already among the candidates.
5. The remaining positions are filled with the candidates in order, up to ``k``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from edge_node.rules.evaluation import Evaluation, ItemCatalog
from edge_node.rules.model import (
    BOUND_ITEM,
    MAX_OFFERS_PER_RESPONSE,
    Action,
    Boost,
    Bury,
    Filter,
    Inject,
    Offer,
    Pin,
    Selector,
)

Step = Callable[["Plan", tuple[str, ...]], None]

_NOT_A_CANDIDATE_SCORE: Final = 0.0


class Matcher:
    """A selector with ``$item`` resolved, for one request."""

    __slots__ = ("_ev", "_items", "_selector")

    def __init__(self, selector: Selector, items: frozenset[str] | None, ev: Evaluation) -> None:
        self._selector = selector
        self._items = items
        self._ev = ev

    def matches(self, item: str) -> bool:
        selector = self._selector
        if self._items is not None and item not in self._items:
            return False
        catalog = self._ev.catalog
        if selector.category is not None and catalog.category_of(item) != selector.category:
            return False
        if selector.price_above is not None or selector.price_below is not None:
            price = catalog.price_of(item)
            if price is None:
                return False
            if selector.price_above is not None and not price > selector.price_above:
                return False
            if selector.price_below is not None and not price < selector.price_below:
                return False
        if selector.stock_below is not None or selector.attributes:
            if not isinstance(catalog, ItemCatalog):
                return False  # no live catalog: nothing is known to match
            if selector.stock_below is not None:
                stock = catalog.stock_of(item)
                if stock is None or not stock < selector.stock_below:
                    return False
            for name, wanted in selector.attributes:
                if catalog.attribute_of(item, name) != wanted:
                    return False
        if selector.bought and item not in self._ev.window.bought:
            return False
        return not (selector.in_cart and item not in self._ev.window.carted)

    def matching(self, candidates: Sequence[str], present: set[str]) -> set[str]:
        """The candidates this matches; ``present`` is ``set(candidates)``."""
        # Walk the smallest collection that holds every match.
        source: Collection[str] = candidates
        window = self._ev.window
        for narrower in (
            self._items,
            window.bought if self._selector.bought else None,
            window.carted if self._selector.in_cart else None,
        ):
            if narrower is not None and len(narrower) < len(source):
                source = narrower
        if source is candidates:
            return {item for item in candidates if self.matches(item)}
        return {item for item in source if item in present and self.matches(item)}


class Plan:
    """What the fired rules of one request asked for."""

    __slots__ = ("boosts", "buries", "ev", "filters", "offers", "placements")

    def __init__(self, ev: Evaluation) -> None:
        self.ev = ev
        self.filters: list[Matcher] = []
        self.boosts: list[tuple[Matcher, float]] = []
        self.buries: list[Matcher] = []
        # (item, 1-based position, only when the item is not a candidate)
        self.placements: list[tuple[str, int, bool]] = []
        self.offers: list[dict[str, Any]] = []

    def finish(
        self, items: Sequence[str], scores: Sequence[float], k: int
    ) -> tuple[list[str], list[float]]:
        score: dict[str, float] = {}
        for item, value in zip(items, scores, strict=True):
            if item not in score:
                score[item] = value
        order = list(score)
        present = set(order)

        removed: set[str] = set()
        for matcher in self.filters:
            removed |= matcher.matching(order, present)
        if removed:
            order = [item for item in order if item not in removed]
            present -= removed

        boosted = False
        for matcher, factor in self.boosts:
            for item in matcher.matching(order, present):
                score[item] *= factor
                boosted = True
        if boosted:
            order.sort(key=score.__getitem__, reverse=True)

        buried: set[str] = set()
        for matcher in self.buries:
            buried |= matcher.matching(order, present)
        if buried:
            order = [item for item in order if item not in buried] + [
                item for item in order if item in buried
            ]

        final = self._place(order, present, removed, k)
        return final, [score.get(item, _NOT_A_CANDIDATE_SCORE) for item in final]

    def _place(self, order: list[str], present: set[str], removed: set[str], k: int) -> list[str]:
        if not self.placements:
            return order[:k]
        # Beyond this length every claim already succeeds, so a huge k allocates nothing more.
        farthest = max(position for _, position, _ in self.placements)
        k = min(k, len(order) + farthest + len(self.placements))
        positions: list[str | None] = [None] * k
        placed: set[str] = set()
        for item, position, only_if_absent in self.placements:
            if item in placed or item in removed or (only_if_absent and item in present):
                continue
            if item not in present and any(f.matches(item) for f in self.filters):
                continue
            index = position - 1
            while index < k and positions[index] is not None:
                index += 1
            if index < k:
                positions[index] = item
                placed.add(item)
        rest = iter([item for item in order if item not in placed])
        filled = [item if item is not None else next(rest, None) for item in positions]
        return [item for item in filled if item is not None]


def compile_action(action: Action, rule_id: str) -> Step:
    if isinstance(action, Filter):
        selector = action.selector
        return lambda plan, bound: _add(plan.filters, selector, bound, plan.ev)
    if isinstance(action, Boost):
        selector, factor = action.selector, action.factor

        def boost(plan: Plan, bound: tuple[str, ...]) -> None:
            matcher = _matcher(selector, bound, plan.ev)
            if matcher is not None:
                plan.boosts.append((matcher, factor))

        return boost
    if isinstance(action, Bury):
        selector = action.selector
        return lambda plan, bound: _add(plan.buries, selector, bound, plan.ev)
    if isinstance(action, Pin | Inject):
        targets = (action.item,) if isinstance(action, Pin) else action.items
        position, only_if_absent = action.position, isinstance(action, Inject)

        def place(plan: Plan, bound: tuple[str, ...]) -> None:
            plan.placements.extend(
                (item, position, only_if_absent) for item in _resolve(targets, bound)
            )

        return place
    if isinstance(action, Offer):
        return _offer(action, rule_id)
    raise TypeError(f"not an action: {action!r}")


def _resolve(items: Sequence[str], bound: tuple[str, ...]) -> list[str]:
    """``items`` with ``$item`` replaced by the bound items, without repeats."""
    if BOUND_ITEM not in items:
        return list(items)
    resolved: dict[str, None] = {}
    for item in items:
        for name in bound if item == BOUND_ITEM else (item,):
            resolved[name] = None
    return list(resolved)


def _matcher(selector: Selector, bound: tuple[str, ...], ev: Evaluation) -> Matcher | None:
    """None when the selector names items and ``$item`` left it with none."""
    if selector.items is None:
        return Matcher(selector, None, ev)
    items = frozenset(_resolve(selector.items, bound))
    return Matcher(selector, items, ev) if items else None


def _add(into: list[Matcher], selector: Selector, bound: tuple[str, ...], ev: Evaluation) -> None:
    matcher = _matcher(selector, bound, ev)
    if matcher is not None:
        into.append(matcher)


def _offer(action: Offer, rule_id: str) -> Step:
    payload_json, item = action.payload_json, action.item

    def offer(plan: Plan, bound: tuple[str, ...]) -> None:
        for target in bound if item == BOUND_ITEM else (item,):
            if len(plan.offers) >= MAX_OFFERS_PER_RESPONSE:
                return
            attached: dict[str, Any] = json.loads(payload_json)
            attached["rule"] = rule_id
            attached["item"] = target
            plan.offers.append(attached)

    return offer
