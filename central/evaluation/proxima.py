"""Proxima bundles as session recommenders, scored through the serving code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from central.evaluation.replay import evaluate
from central.eventlog import EventLog
from protocol.featurize import event_time
from protocol.serving import ServingModel
from protocol.tables import CandidateTables
from protocol.window import SessionWindow


class ProximaRecommender:
    """Replays a session into a :class:`SessionWindow` and ranks with a serving model, as
    of the time of the event just replayed (the clock policy of :mod:`protocol.featurize`,
    the same as training's)."""

    def __init__(self, name: str, model: ServingModel) -> None:
        self.name = name
        self.model = model
        self._window: SessionWindow | None = None
        self._to_log: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._vocabulary: list[str] | None = None

    def fit(self, train: EventLog) -> None:
        """Bundles are trained elsewhere; this only learns the log's item codes."""
        self._map_items(train)

    def start_session(self) -> None:
        self._window = None

    def observe(self, log: EventLog, row: int) -> None:
        if self._vocabulary is not log.item_ids:
            self._map_items(log)
        event = log.event(row)
        if self._window is None:
            self._window = SessionWindow(event.session_id, self.model.window_config)
        self._window.add(event)

    def recommend(self, k: int) -> Sequence[int] | npt.NDArray[np.int64]:
        if self._window is None:
            return []
        ranking = self.model.rank(self._window, k, event_time(self._window))
        codes = self._to_log[ranking.items]
        return codes[codes >= 0]

    def _map_items(self, log: EventLog) -> None:
        code = {item: i for i, item in enumerate(log.item_ids)}
        self._to_log = np.fromiter(
            (code.get(item, -1) for item in self.model.tables.item_ids),
            np.int64,
            self.model.tables.n_items,
        )
        self._vocabulary = log.item_ids


def validation_replay(
    log: EventLog,
    runs: npt.NDArray[np.int64],
    tables: CandidateTables,
    settings: Mapping[str, Any],
    rankers: Mapping[str, bytes | None],
) -> dict[str, Any]:
    """HR@20 / MRR@20 of each ranker on the session runs ``runs`` of ``log``."""
    bounds = log.session_bounds()
    rows = np.zeros(log.n_events, dtype=bool)
    for run in runs:
        rows[bounds[run] : bounds[run + 1]] = True
    held_out = log.select(rows)
    results: dict[str, Any] = {}
    for precision, ranker in rankers.items():
        if ranker is None:
            continue
        kind: Literal["fp32", "int8"] = "int8" if precision == "int8" else "fp32"
        model = ServingModel.from_parts({}, ranker, kind, settings, tables=tables)
        result = evaluate(ProximaRecommender(f"proxima-{precision}", model), held_out, k=20)
        results[precision] = {
            "hr_at_20": round(result.hr_at_k, 6),
            "mrr_at_20": round(result.mrr_at_k, 6),
            "predictions": result.predictions,
        }
    return results
