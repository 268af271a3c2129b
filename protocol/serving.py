"""A bundle made ready to answer: tables, ranker and settings, and the ranking step.

The edge serves through :meth:`ServingModel.rank` and the offline evaluation scores
bundles through the very same method, so what is measured offline is what is served.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from protocol import candidates as candidate_generation
from protocol import features
from protocol.bundle import Bundle, Manifest
from protocol.candidates import CandidateConfig, Candidates
from protocol.errors import ManifestError
from protocol.ranker import OnnxRanker
from protocol.tables import CandidateTables
from protocol.window import SessionWindow, WindowConfig

Precision = Literal["serve", "fp32", "int8"]


@dataclass(frozen=True, slots=True)
class Ranking:
    items: npt.NDArray[np.int32]  # table indices, best first
    scores: npt.NDArray[np.float32]
    candidates_s: float
    features_s: float
    inference_s: float
    cold: bool  # no known session item: popularity answered


@dataclass(frozen=True, eq=False)
class ServingModel:
    version: int
    tables: CandidateTables
    ranker: OnnxRanker
    precision: Literal["fp32", "int8"]
    window_config: WindowConfig
    candidate_config: CandidateConfig
    manifest: Manifest | None = None
    cache: RankCache | None = field(default=None, compare=False)

    @classmethod
    def from_bundle(cls, bundle: Bundle, precision: Precision = "serve") -> ServingModel:
        manifest = bundle.manifest
        if manifest.feature_schema_version != features.FEATURE_SCHEMA_VERSION:
            raise ManifestError(
                f"bundle uses feature schema {manifest.feature_schema_version}, this build "
                f"computes schema {features.FEATURE_SCHEMA_VERSION}",
                code="feature_schema_mismatch",
                field="feature_schema_version",
            )
        names = manifest.config.get("feature_names")
        if names != list(features.FEATURE_NAMES):
            raise ManifestError(
                "bundle's feature names differ from this build's",
                code="feature_schema_mismatch",
                field="config.feature_names",
            )
        chosen = manifest.ranker.get("precision") if precision == "serve" else precision
        part = manifest.ranker.get(str(chosen))
        if chosen not in ("fp32", "int8") or not isinstance(part, str):
            raise ManifestError(
                f"bundle has no {chosen} ranker", code="missing_ranker", field="ranker"
            )
        return cls.from_parts(
            bundle.parts,
            bundle.part(part),
            chosen,
            manifest.config,
            version=manifest.version,
            manifest=manifest,
        )

    @classmethod
    def from_parts(
        cls,
        parts: Mapping[str, bytes],
        ranker: bytes,
        precision: Literal["fp32", "int8"],
        config: Mapping[str, Any],
        *,
        version: int = 0,
        manifest: Manifest | None = None,
        tables: CandidateTables | None = None,
    ) -> ServingModel:
        """A model from parts that may not be signed yet (the trainer checks before signing)."""
        try:
            window_config = WindowConfig(**_section(config, "window"))
            candidate_config = CandidateConfig(**_section(config, "candidates"))
        except TypeError as exc:
            raise ManifestError(
                f"bundle config has an unknown setting: {exc}", field="config"
            ) from exc
        return cls(
            version=version,
            tables=tables if tables is not None else CandidateTables.from_parts(parts),
            ranker=OnnxRanker(ranker, features.N_FEATURES),
            precision=precision,
            window_config=window_config,
            candidate_config=candidate_config,
            manifest=manifest,
        )

    def rank(self, window: SessionWindow, k: int, now_ms: int | None = None) -> Ranking:
        clock = time.perf_counter
        started = clock()
        cached = self.cache.get(window) if self.cache is not None else None
        if cached is not None:
            found, matrix = cached
            generated = clock()
            features.refresh_clock(matrix, window, found, self.tables, now_ms)
        else:
            found = candidate_generation.generate(window, self.tables, self.candidate_config)
            if found.session_items.shape[0] == 0:
                items = self.tables.recent_order[:k]
                scores = self.tables.pop_recent[items]
                return Ranking(items, scores, clock() - started, 0.0, 0.0, cold=True)
            generated = clock()
            matrix = features.compute(window, found, self.tables, now_ms)
            if self.cache is not None:
                self.cache.put(window, found, matrix)
        computed = clock()
        scores = self.ranker.score(matrix)
        scored = clock()
        if scores.shape[0] > k:
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
        else:
            top = np.argsort(-scores, kind="stable")
        return Ranking(
            found.items[top],
            scores[top],
            generated - started,
            computed - generated,
            scored - computed,
            cold=False,
        )


class RankCache:
    """Candidates and feature rows of the most recently ranked windows, by revision.

    A page asks for recommendations several times between two events of its session
    (page render, other slots, the WebSocket push); while the window is unchanged only
    the clock-dependent feature columns are recomputed. Bounded by ``max_sessions``.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._entries: OrderedDict[str, tuple[int, Candidates, npt.NDArray[np.float32]]] = (
            OrderedDict()
        )
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, window: SessionWindow) -> tuple[Candidates, npt.NDArray[np.float32]] | None:
        entry = self._entries.get(window.session_id)
        if entry is None or entry[0] != window.revision:
            self.misses += 1
            return None
        self._entries.move_to_end(window.session_id)
        self.hits += 1
        return entry[1], entry[2]

    def put(
        self, window: SessionWindow, found: Candidates, matrix: npt.NDArray[np.float32]
    ) -> None:
        self._entries[window.session_id] = (window.revision, found, matrix)
        self._entries.move_to_end(window.session_id)
        if len(self._entries) > self.max_sessions:
            self._entries.popitem(last=False)


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ManifestError(f"config.{name} must be an object", field=f"config.{name}")
    return value
