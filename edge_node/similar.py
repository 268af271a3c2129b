"""Items similar to one item, for product pages: co-visitation, then content, then rules.

Co-visitation neighbours come from the bundle's tables (items viewed near this one in past
sessions, by weight); content neighbours from the catalog: servable items of the same
category, closest in price first (so an item the bundle has never seen has neighbours, and is
one). The rules run on the merged list as on any answer (with the session's window when a
``session_id`` is given, an empty one otherwise), and the catalog's filter is applied last,
as in :mod:`edge_node.recommend`: an unavailable item is never similar to anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from edge_node import discovery
from edge_node.catalog import CatalogReplica
from edge_node.errors import NotFound, NotReady
from edge_node.recommend import Recommender, Scalar
from edge_node.rules import RuleRequest
from protocol.tables import CandidateTables
from protocol.window import SessionWindow

COVISITATION: Final = "covisitation"
CONTENT: Final = "content"
_CONTENT_SCAN: Final = 512
_POOL: Final = 100


@dataclass(frozen=True, slots=True)
class SimilarQuery:
    item_id: str
    k: int
    session_id: str | None
    slot: str | None
    context: Mapping[str, Scalar]


def covisitation(tables: CandidateTables, item_id: str, limit: int) -> list[tuple[str, float]]:
    index = tables.item_index.get(item_id)
    if index is None:
        return []
    start, end = int(tables.covis_indptr[index]), int(tables.covis_indptr[index + 1])
    neighbours = tables.covis_indices[start:end]
    weights = tables.covis_weights[start:end]
    order = sorted(range(end - start), key=lambda i: -float(weights[i]))[:limit]
    top = float(weights[order[0]]) if order else 1.0
    return [
        (tables.item_ids[int(neighbours[i])], round(float(weights[i]) / (top or 1.0), 6))
        for i in order
        if int(neighbours[i]) != index
    ]


def content(
    replica: CatalogReplica, category: str | None, price: float | None, item_id: str, limit: int
) -> list[tuple[str, float]]:
    """Servable items of ``category``, nearest in price first, scored below co-visitation."""
    if category is None:
        return []
    found = []
    for other in replica.newest_in_category(category, _CONTENT_SCAN):
        if other == item_id:
            continue
        other_price = replica.price_of(other)
        distance = 1.0
        if price is not None and price > 0 and other_price is not None and other_price > 0:
            distance = min(1.0, abs(math.log(other_price / price)))
        found.append((other, distance))
    found.sort(key=lambda pair: pair[1])
    return [(other, round(0.5 * (1.0 - distance), 6)) for other, distance in found[:limit]]


async def similar(recommender: Recommender, query: SimilarQuery) -> dict[str, Any]:
    model = recommender.models.current
    if model is None:
        raise NotReady("no verified bundle is loaded yet", retry_after_s=1)
    tables = model.tables
    replica = recommender.catalog
    fields = recommender.catalog_fields(model)
    known = query.item_id in tables.item_index or (
        replica is not None and replica.get(query.item_id) is not None
    )
    if not known:
        raise NotFound(f"no item {query.item_id!r} is known here", code="item_not_found")
    pool = covisitation(tables, query.item_id, _POOL)
    reasons = dict.fromkeys((name for name, _ in pool), COVISITATION)
    if replica is not None:
        category = fields.category_of(query.item_id)
        extra = content(replica, category, fields.price_of(query.item_id), query.item_id, _POOL)
        for name, score in extra:
            if name not in reasons:
                reasons[name] = CONTENT
                pool.append((name, score))
    names = [name for name, _ in pool]
    scores = [score for _, score in pool]
    window = None
    if query.session_id is not None:
        window = await recommender.sessions.get(query.session_id)
    if window is None:
        window = SessionWindow(query.session_id or "-", model.window_config)
    fired: list[str] = []
    offers: list[dict[str, Any]] = []
    rules = recommender.rules
    if rules is not None:
        now_ms = int(time.time() * 1000)
        outcome = rules.apply(
            names, scores, window, RuleRequest(query.slot, query.context, now_ms), fields,
            len(names),
        )  # fmt: skip
        names, scores, fired, offers = outcome.items, outcome.scores, outcome.fired, outcome.offers
    if replica is not None:
        names, scores = discovery.servable(replica, names, scores)
    pairs = [(n, s) for n, s in zip(names, scores, strict=True) if n != query.item_id][: query.k]
    return {
        "item_id": query.item_id,
        "model_version": model.version,
        "items": [
            {"item_id": name, "score": score, "reason": reasons.get(name, "rules")}
            for name, score in pairs
        ],
        "rules": fired,
        "offers": offers,
        "catalog_revision": replica.revision if replica is not None else None,
    }
