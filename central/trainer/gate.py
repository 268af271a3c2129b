"""The publishing gate: a freshly trained bundle against the stable one, on the same sessions.

Both are replayed (:func:`central.evaluation.replay.evaluate`, through the serving code) on
recent sessions of the trainer's log that neither has learnt from, as far as the log
allows. They are taken from the sessions :func:`train_bundle` held out from fitting its
ranker (the most recent ones); where enough of those began after the stable bundle's last
training event, only those are used, so the stable bundle has not seen them either. The
candidate ranks with tables built from the whole log but the scored sessions (its shipped
tables include them, which would flatter it); the stable bundle ranks as it serves, with
its own tables and precision. The candidate passes when its HR@20 is at most
``max_hr_loss`` (relative) below the stable bundle's, and always when there is no stable
bundle to compare with. When too few sessions are newer than the stable bundle, the
comparison leans towards the stable bundle, which has seen the sessions it is scored on:
the gate then errs on the side of keeping what is served.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from central.evaluation.proxima import ProximaRecommender
from central.evaluation.replay import evaluate
from central.eventlog import EventLog
from central.trainer.pipeline import TrainerConfig
from central.trainer.tables import build_tables
from model_export.gates import no_worse_than
from protocol.bundle import Bundle
from protocol.serving import ServingModel

MAX_HR_LOSS: Final = 0.02
MIN_UNSEEN_PREDICTIONS: Final = 100
K: Final = 20


@dataclass(frozen=True, slots=True)
class Score:
    hr_at_20: float
    mrr_at_20: float

    def to_dict(self) -> dict[str, float]:
        return {"hr_at_20": round(self.hr_at_20, 6), "mrr_at_20": round(self.mrr_at_20, 6)}


@dataclass(frozen=True, slots=True)
class GateResult:
    passed: bool
    reason: str
    candidate: Score
    stable_version: int | None
    stable: Score | None
    sessions: int
    predictions: int
    unseen_only: bool  # scored only on sessions newer than the stable bundle's training

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "candidate": self.candidate.to_dict(),
            "stable_version": self.stable_version,
            "stable": self.stable.to_dict() if self.stable is not None else None,
            "sessions": self.sessions,
            "predictions": self.predictions,
            "unseen_only": self.unseen_only,
        }


def compare_with_stable(
    log: EventLog,
    config: TrainerConfig,
    candidate: Bundle,
    stable: ServingModel | None,
    *,
    max_hr_loss: float = MAX_HR_LOSS,
) -> GateResult:
    """Scores ``candidate`` (trained on ``log`` with ``config``) and ``stable`` alike."""
    bounds = log.session_bounds()
    held_out = _most_recent_runs(log, bounds, config.validation_fraction)
    runs, unseen_only = _unseen_by(stable, log, bounds, held_out)
    runs = _capped(runs, bounds, config.max_validation_positions, config.seed)
    scored = _rows_of(runs, bounds, log.n_events)
    test = log.select(scored)
    tables_without_test = build_tables(log.select(~scored), config.tables)
    ranker = candidate.manifest.ranker
    precision: Literal["fp32", "int8"] = "int8" if ranker["precision"] == "int8" else "fp32"
    candidate_model = ServingModel.from_parts(
        candidate.parts,
        candidate.part(str(ranker["serve"])),
        precision,
        candidate.manifest.config,
        tables=tables_without_test,
    )
    candidate_result = evaluate(ProximaRecommender("candidate", candidate_model), test, k=K)
    result = GateResult(
        passed=True,
        reason="no stable bundle to compare with",
        candidate=Score(candidate_result.hr_at_k, candidate_result.mrr_at_k),
        stable_version=None,
        stable=None,
        sessions=int(runs.shape[0]),
        predictions=candidate_result.predictions,
        unseen_only=unseen_only,
    )
    if stable is None:
        return result
    stable_result = evaluate(ProximaRecommender("stable", stable), test, k=K)
    new_hr, stable_hr = candidate_result.hr_at_k, stable_result.hr_at_k
    passed = no_worse_than(new_hr, stable_hr, max_hr_loss)
    margin = "within" if passed else "more than"
    return replace(
        result,
        passed=passed,
        reason=(
            f"HR@20 {new_hr:.4f} against stable's {stable_hr:.4f}: "
            f"{'not below it' if new_hr >= stable_hr else f'{margin} {max_hr_loss:.0%} below it'}"
        ),
        stable_version=stable.version,
        stable=Score(stable_hr, stable_result.mrr_at_k),
    )


def _most_recent_runs(
    log: EventLog, bounds: npt.NDArray[np.int64], fraction: float
) -> npt.NDArray[np.int64]:
    """The runs :func:`train_bundle` holds out: the latest ``fraction`` by last event."""
    ended = log.ts[bounds[1:] - 1]
    n_held = max(1, round((bounds.shape[0] - 1) * fraction))
    latest: npt.NDArray[np.int64] = np.argsort(ended, kind="stable")[len(ended) - n_held :]
    return np.sort(latest).astype(np.int64)


def _unseen_by(
    stable: ServingModel | None,
    log: EventLog,
    bounds: npt.NDArray[np.int64],
    runs: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], bool]:
    manifest = stable.manifest if stable is not None else None
    last_ts = manifest.training.get("last_ts") if manifest is not None else None
    if not isinstance(last_ts, int):
        return runs, False
    unseen = runs[log.ts[bounds[runs]] > last_ts]
    predictions = int((bounds[unseen + 1] - bounds[unseen] - 1).sum())
    if predictions < MIN_UNSEEN_PREDICTIONS:
        return runs, False
    return unseen, True


def _capped(
    runs: npt.NDArray[np.int64], bounds: npt.NDArray[np.int64], max_positions: int, seed: int
) -> npt.NDArray[np.int64]:
    positions = int((bounds[runs + 1] - bounds[runs] - 1).sum())
    if positions <= max_positions:
        return runs
    chosen = np.random.default_rng(seed + 7).random(runs.shape[0]) < max_positions / positions
    capped: npt.NDArray[np.int64] = runs[chosen]
    return capped


def _rows_of(
    runs: npt.NDArray[np.int64], bounds: npt.NDArray[np.int64], n_events: int
) -> npt.NDArray[np.bool_]:
    rows = np.zeros(n_events, dtype=bool)
    for run in runs.tolist():
        rows[bounds[run] : bounds[run + 1]] = True
    return rows
