"""Answering "what should this session see next": window, ranking, rules, answer.

Shared by ``GET /v1/recommendations`` and the WebSocket push, so both answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_node import discovery
from edge_node.answer_log import AnswerLog
from edge_node.answer_policy import AnswerPolicy, holdout_request_id
from edge_node.catalog import CatalogReplica, ItemFields
from edge_node.errors import NotReady
from edge_node.feedback import FeedbackIds
from edge_node.model_store import ModelStore
from edge_node.observe import Observer
from edge_node.rules import Catalog, RuleRequest, RuleSet
from edge_node.sessions import SessionStore
from edge_node.telemetry import TelemetryRecorder
from edge_node.users import UserHistory
from protocol.answers import ServedAnswer
from protocol.rollout import Variant
from protocol.serving import ServingModel
from protocol.tables import CandidateTables
from protocol.window import SessionWindow

log = logging.getLogger("proxima.edge.recommend")

Scalar = str | int | float | bool | None


class TableCatalog:
    """Item attributes from the bundle's tables, as the rules engine asks for them."""

    __slots__ = ("_tables",)

    def __init__(self, tables: CandidateTables) -> None:
        self._tables = tables

    def category_of(self, item_id: str) -> str | None:
        index = self._tables.item_index.get(item_id)
        if index is None:
            return None
        code = int(self._tables.category[index])
        return self._tables.categories[code] if code >= 0 else None

    def price_of(self, item_id: str) -> float | None:
        index = self._tables.item_index.get(item_id)
        if index is None:
            return None
        price = float(self._tables.price[index])
        return None if price != price else price  # NaN: unknown


@dataclass(frozen=True, slots=True)
class Query:
    session_id: str
    k: int
    slot: str | None
    context: Mapping[str, Scalar]


class Recommender:
    """Answers with the session's variant; a canary that fails falls back to stable.

    A shadow canary is scored after the answer has been handed over (``call_soon``), on a
    sampled share of requests, and only its agreement with stable and its latency are kept.
    Every stage and outcome is recorded once, into ``observer``.
    """

    def __init__(
        self,
        models: ModelStore,
        sessions: SessionStore,
        observer: Observer,
        node: str,
        rules: RuleSet | None = None,
        *,
        shadow_sample: float = 1.0,
        feedback: FeedbackIds | None = None,
    ) -> None:
        self.models = models
        self.sessions = sessions
        self.observer = observer
        self.rules = rules
        self.shadow_sample = shadow_sample
        self._catalog: tuple[ServingModel, Catalog] | None = None
        self.catalog: CatalogReplica | None = None  # the item catalog, with --nats
        self.users: UserHistory | None = None  # returning users' recent items
        self.explore_every = 0  # one slot in this many may go to a new item (0: none)
        self.feedback = feedback or FeedbackIds.per_process()
        self._random = random.Random()
        self.policy = AnswerPolicy()  # holdout share and exploration
        self.answer_log: AnswerLog | None = None  # served records into the uplink

    @property
    def telemetry(self) -> TelemetryRecorder:
        """The telemetry interval the observer feeds (what the telemetry publisher takes)."""
        return self.observer.telemetry

    def next_request_id(self, session_id: str, variant: Variant, version: int) -> str:
        """A request id only this node's secret makes, bound to the session and the answer."""
        return self.feedback.issue(session_id, variant, version)

    async def answer(self, query: Query) -> dict[str, Any]:
        model, variant = self.models.choose(query.session_id)
        if model is None:
            raise NotReady("no verified bundle is loaded yet", retry_after_s=1)
        clock = time.perf_counter
        started = clock()
        window = await self.sessions.get(query.session_id)
        windowed = clock()
        observer = self.observer
        observer.stage("window", windowed - started)

        now_ms = int(time.time() * 1000)
        if window is None:
            window = SessionWindow(query.session_id, model.window_config)
        if self.users is not None:  # a returning user's earlier items, for a short session
            window = await self.users.augment(window)
        rules = self.rules
        catalog = self.catalog
        depth = max(query.k, 100) if rules is not None or catalog is not None else query.k
        policy = self.policy
        depth = max(depth, policy.depth(query.k))
        holdout = policy.in_holdout(query.session_id)
        try:
            ranking = model.popular(depth) if holdout else model.rank(window, depth, now_ms)
        except Exception:
            observer.failed(variant, model.version)
            stable = self.models.current
            if variant != "canary" or stable is None:
                raise
            log.exception("canary bundle %d failed; answering with stable", model.version)
            model, variant = stable, "stable"
            ranking = model.rank(window, depth, now_ms)
        observer.stage("candidates", ranking.candidates_s)
        if not ranking.cold:
            observer.stage("features", ranking.features_s)
            observer.stage("inference", ranking.inference_s)

        ruled = clock()
        item_ids = model.tables.item_ids
        names = [item_ids[i] for i in ranking.items.tolist()]
        scores = np.round(ranking.scores.astype(np.float64), 6).tolist()
        if not holdout:
            self._maybe_shadow(window, names[: query.k], query.k, now_ms)
        fired: list[str] = []
        offers: list[dict[str, Any]] = []
        if rules is not None:
            outcome = rules.apply(
                names,
                scores,
                window,
                RuleRequest(query.slot, query.context, now_ms),
                self._catalog_for(model),
                query.k if catalog is None else len(names),
            )
            names, scores, fired, offers = (
                outcome.items,
                outcome.scores,
                outcome.fired,
                outcome.offers,
            )
        reasons: dict[str, str] = {}
        if catalog is not None:  # the one place hidden items leave every answer
            names, scores, reasons = discovery.finish(
                catalog, window, names, scores, policy.depth(query.k),
                known=model.tables.item_index.__contains__,
                explore=discovery.exploration_slots(query.k, self.explore_every, self._random),
            )  # fmt: skip
        chosen = policy.choose(names, query.k)
        score_of = dict(zip(names, scores, strict=False))
        done = clock()
        observer.stage("rules", done - ruled)
        observer.answered(variant, model.version, done - started, cold=ranking.cold, fired=fired)
        request_id = (
            holdout_request_id()
            if holdout
            else self.next_request_id(query.session_id, variant, model.version)
        )
        served_variant = "holdout" if holdout else variant
        if self.answer_log is not None and chosen.items:
            self.answer_log.record(
                ServedAnswer(
                    request_id=request_id,
                    session_id=query.session_id,
                    ts=now_ms,
                    items=chosen.items,
                    propensities=chosen.propensities,
                    variant=served_variant,
                    bundle=0 if holdout else model.version,
                    policy=policy.name,
                )
            )
        return {
            "request_id": request_id,
            "session_id": query.session_id,
            "model_version": model.version,
            "variant": served_variant,
            "precision": model.precision,
            "policy": policy.name,
            "items": [
                {
                    "item_id": name,
                    "score": score_of[name],
                    "position": position,
                    "propensity": propensity,
                    **_reason(reasons, name),
                }
                for position, (name, propensity) in enumerate(
                    zip(chosen.items, chosen.propensities, strict=True)
                )
            ],
            "rules": fired,
            "offers": offers,
            "cold": ranking.cold,
            "stale": self.models.stale,
            "catalog_revision": catalog.revision if catalog is not None else None,
        }

    def _maybe_shadow(self, window: SessionWindow, served: list[str], k: int, now_ms: int) -> None:
        canary = self.models.canary
        if canary is None or not canary.shadow or not served:
            return
        if self.shadow_sample < 1.0 and self._random.random() >= self.shadow_sample:
            return
        asyncio.get_running_loop().call_soon(
            self._score_shadow, canary.model, window, served, k, now_ms
        )

    def _score_shadow(
        self, model: ServingModel, window: SessionWindow, served: list[str], k: int, now_ms: int
    ) -> None:
        started = time.perf_counter()
        try:
            ranking = model.rank(window, k, now_ms)
        except Exception:
            log.exception("shadow canary %d failed to rank", model.version)
            self.observer.shadow_failed(model.version)
            return
        elapsed = time.perf_counter() - started
        item_ids = model.tables.item_ids
        shadow_top = {item_ids[i] for i in ranking.items.tolist()}
        overlap = len(shadow_top.intersection(served)) / len(served)
        self.observer.shadow_scored(model.version, overlap, elapsed)

    def catalog_fields(self, model: ServingModel) -> Catalog:
        """Item fields as rules read them: the catalog's, else the bundle's."""
        return self._catalog_for(model)

    def _catalog_for(self, model: ServingModel) -> Catalog:
        cached = self._catalog
        if cached is None or cached[0] is not model:
            tables: Catalog = TableCatalog(model.tables)
            fields = tables if self.catalog is None else ItemFields(self.catalog, tables)
            cached = (model, fields)
            self._catalog = cached
        return cached[1]


def _reason(reasons: dict[str, str], name: str) -> dict[str, str]:
    reason = reasons.get(name)
    return {} if reason is None else {"reason": reason}
