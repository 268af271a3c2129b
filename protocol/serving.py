"""A bundle made ready to answer: tables, ranker and settings, and the ranking step.

The edge serves through :meth:`ServingModel.rank` and the offline evaluation scores
bundles through the very same method, so what is measured offline is what is served.
Candidates and feature rows come from :mod:`protocol.featurize`, as the trainer's do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from protocol import features
from protocol.bundle import Bundle, Manifest
from protocol.candidates import CandidateConfig
from protocol.errors import ManifestError
from protocol.featurize import RankCache, featurize
from protocol.ranker import OnnxRanker
from protocol.tables import CandidateTables
from protocol.window import SessionWindow, WindowConfig

__all__ = ["Precision", "RankCache", "Ranking", "ServingModel"]

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

    def popular(self, k: int) -> Ranking:
        """The ``k`` most popular items of late: the cold answer, and the holdout's."""
        return self._popular(k, 0.0)

    def _popular(self, k: int, elapsed_s: float) -> Ranking:
        items = self.tables.recent_order[:k]
        return Ranking(items, self.tables.pop_recent[items], elapsed_s, 0.0, 0.0, cold=True)

    def rank(self, window: SessionWindow, k: int, now_ms: int) -> Ranking:
        """The ``k`` best candidates for ``window``, scored with features as of ``now_ms``.

        ``now_ms`` is required and follows :mod:`protocol.featurize`'s clock policy: the
        request's time at the edge, :func:`protocol.featurize.event_time` in replay.
        """
        clock = time.perf_counter
        started = clock()
        featurized = featurize(
            window, self.tables, self.candidate_config, now_ms=now_ms, cache=self.cache
        )
        if featurized.cold:
            return self._popular(k, clock() - started)
        generated = clock()
        matrix = featurized.rows()
        computed = clock()
        scores = self.ranker.score(matrix)
        scored = clock()
        if scores.shape[0] > k:
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
        else:
            top = np.argsort(-scores, kind="stable")
        return Ranking(
            featurized.candidates.items[top],
            scores[top],
            generated - started,
            computed - generated,
            scored - computed,
            cold=False,
        )


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ManifestError(f"config.{name} must be an object", field=f"config.{name}")
    return value
