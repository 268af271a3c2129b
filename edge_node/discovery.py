"""New items before the next retrain: content neighbours from the catalog and a bounded
exploration share.

An item the catalog holds but the bundle does not has no interactions yet, so neither the
co-visitation tables nor the ranker can bring it up. :func:`explore` gives such items at most
one slot in ``every`` of an answer (a fraction of a slot becomes a chance, so short answers
explore too, at the same rate): the newest servable new item of the session's category (its
last item's, else its most viewed), else the newest new item of any category. The slot taken
is the answer's last, so exploration never displaces the best-ranked items; the item says
``"reason": "new_item"`` in the answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from edge_node.catalog import CatalogReplica
from protocol.window import SessionWindow

NEW_ITEM_REASON: Final = "new_item"
_SCAN: Final = 256  # catalog entries looked at per category, newest first


def exploration_slots(k: int, every: int, rng: random.Random) -> int:
    if every <= 0 or k <= 0:
        return 0
    whole, part = divmod(k, every)
    return whole + (1 if part and rng.random() < part / every else 0)


def new_items(
    replica: CatalogReplica,
    window: SessionWindow,
    known: Callable[[str], bool],
    wanted: int,
    exclude: set[str],
) -> list[str]:
    """Up to ``wanted`` servable items the bundle does not know, closest to the session first."""
    found: list[str] = []
    for category in _session_categories(replica, window):
        _collect(replica.newest_in_category(category, _SCAN), known, exclude, found, wanted)
        if len(found) >= wanted:
            return found
    _collect(replica.newest(_SCAN), known, exclude, found, wanted)
    return found


def _collect(
    candidates: list[str], known: Callable[[str], bool], exclude: set[str], found: list[str],
    wanted: int,
) -> None:  # fmt: skip
    for item_id in candidates:
        if len(found) >= wanted:
            return
        if not known(item_id) and item_id not in exclude and item_id not in found:
            found.append(item_id)


def _session_categories(replica: CatalogReplica, window: SessionWindow) -> list[str]:
    categories: list[str] = []
    last = window.last_item
    if last is not None:
        category = replica.category_of(last)
        if category is not None:
            categories.append(category)
    by_count = sorted(window.category_counts.items(), key=lambda pair: -pair[1])
    categories.extend(c for c, _ in by_count if c not in categories)
    return categories[:3]


def servable(replica: CatalogReplica, names: list[str], scores: list[float]) -> tuple[
    list[str], list[float]
]:  # fmt: skip
    """``names`` (with their scores) without the items the catalog hides: THE filter every
    answer passes through last."""
    if not replica.hidden_count:
        return names, scores
    kept = [(n, s) for n, s in zip(names, scores, strict=True) if not replica.hidden(n)]
    return [n for n, _ in kept], [s for _, s in kept]


def finish(
    replica: CatalogReplica,
    window: SessionWindow,
    names: list[str],
    scores: list[float],
    k: int,
    *,
    known: Callable[[str], bool],
    explore: int,
) -> tuple[list[str], list[float], dict[str, str]]:
    """The answer's top ``k``: exploration slots filled with new items, hidden items out."""
    reasons: dict[str, str] = {}
    if explore:
        fresh = new_items(replica, window, known, explore, set(names[:k]))
        if fresh:
            keep = max(0, min(len(names), k) - len(fresh))
            floor = scores[keep - 1] if keep and scores else 0.0
            names = [*names[:keep], *fresh, *names[keep:]]
            scores = [*scores[:keep], *([floor] * len(fresh)), *scores[keep:]]
            reasons = dict.fromkeys(fresh, NEW_ITEM_REASON)
    names, scores = servable(replica, names, scores)
    return names[:k], scores[:k], reasons
