"""From an event log to a signed bundle: tables, examples, ranker, export, gates.

1. The most recent sessions (``validation_fraction``) are held out; the rest fit.
2. Examples are cross-fitted: the fitting sessions are dealt into ``folds``; each fold is
   replayed against tables built from the other folds, so every example sees tables
   built on most of the data, as the edge will, without seeing its own session in them.
3. A scikit-learn ranker learns from them, is exported to ONNX, and must match
   scikit-learn within 1e-4 on held-out rows; int8 is served only if its HR@20 on the
   validation replay is within 2 % (relative) of fp32's.
4. The bundle's tables are rebuilt from the whole log, and the bundle is signed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from central.errors import TrainingError
from central.evaluation.proxima import validation_replay
from central.eventlog import EventLog
from central.trainer.examples import ExampleSet, build_examples
from central.trainer.listwise import ListwiseConfig, fine_tune
from central.trainer.tables import TableConfig, build_tables
from model_export.convert import to_onnx
from model_export.gates import no_worse_than, parity_gate
from model_export.pack import pack_bundle
from model_export.quantize import quantize_int8
from protocol import features
from protocol.candidates import CandidateConfig
from protocol.tables import CandidateTables
from protocol.window import WindowConfig

FP32_PART = "ranker.fp32.onnx"
INT8_PART = "ranker.int8.onnx"
INT8_MAX_HR_LOSS = 0.02

Progress = Callable[[str, int, int], None]  # stage, done, total


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    tables: TableConfig = field(default_factory=TableConfig)
    folds: int = 5
    max_positions: int = 30_000  # replayed positions used for examples, sampled by session
    negatives: int = 30
    hidden_layers: tuple[int, ...] = (64, 32)
    alpha: float = 1e-2
    patience: int = 5  # epochs without improvement before stopping; 10 cost 2x, same validation
    listwise: ListwiseConfig | None = field(default_factory=ListwiseConfig)  # None: pointwise
    validation_fraction: float = 0.1
    max_validation_positions: int = 3_000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TrainResult:
    bundle: bytes
    manifest_metrics: dict[str, Any]
    training: dict[str, Any]


def train_bundle(
    log: EventLog,
    config: TrainerConfig,
    *,
    version: int,
    private_key_pem: bytes,
    rules_version: str | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    rng = np.random.default_rng(config.seed)
    bounds = log.session_bounds()
    n_runs = bounds.shape[0] - 1
    if n_runs < 2 * config.folds:
        raise TrainingError(
            f"need at least {2 * config.folds} sessions to train, the log has {n_runs}"
        )
    run_of_row = np.repeat(np.arange(n_runs), np.diff(bounds))
    held_out = _most_recent_runs(log, bounds, config.validation_fraction)
    fitting = np.setdiff1d(np.arange(n_runs), held_out)

    fold_of_run = np.full(n_runs, -1, dtype=np.int64)
    fold_of_run[fitting] = rng.integers(0, config.folds, fitting.shape[0])
    positions = np.diff(bounds) - 1
    share = min(1.0, config.max_positions / max(1, int(positions[fitting].sum())))
    sets: list[ExampleSet] = []
    for fold in range(config.folds):
        report("examples", fold, config.folds)
        tables = build_tables(
            log.select((fold_of_run[run_of_row] != fold) & (fold_of_run[run_of_row] >= 0)),
            config.tables,
        )
        runs = np.flatnonzero(fold_of_run == fold)
        if share < 1.0:
            runs = runs[rng.random(runs.shape[0]) < share]
        sets.append(_examples(log, runs, tables, config, seed=config.seed + fold))
    report("examples", config.folds, config.folds)
    fit_tables = build_tables(log.select(fold_of_run[run_of_row] >= 0), config.tables)
    check_runs = held_out
    if positions[held_out].sum() > config.max_validation_positions:
        check_runs = held_out[
            rng.random(held_out.shape[0])
            < config.max_validation_positions / positions[held_out].sum()
        ]

    def bundle_tables() -> CandidateTables:
        report("tables", 0, 1)
        tables = build_tables(log, config.tables)
        report("tables", 1, 1)
        return tables

    prepared = Prepared(
        sets=sets,
        validation_log=log,
        validation_runs=check_runs,
        validation_tables=fit_tables,
        bundle_tables=bundle_tables,
        log_facts={
            "events": log.n_events,
            "sessions": int(n_runs),
            "first_ts": int(log.ts.min()),
            "last_ts": int(log.ts.max()),
        },
    )
    return finish_bundle(
        prepared,
        config,
        version=version,
        private_key_pem=private_key_pem,
        rules_version=rules_version,
        progress=report,
        started=started,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a pipeline hands to :func:`finish_bundle`: its examples, the held-out sessions
    to validate on with the tables they are replayed against, and the bundle's tables."""

    sets: list[ExampleSet]
    validation_log: EventLog
    validation_runs: npt.NDArray[np.int64]  # session runs of validation_log to replay
    validation_tables: CandidateTables
    bundle_tables: Callable[[], CandidateTables]
    log_facts: dict[str, Any]  # events, sessions, first_ts, last_ts (and what else it knows)


def finish_bundle(
    prepared: Prepared,
    config: TrainerConfig,
    *,
    version: int,
    private_key_pem: bytes,
    rules_version: str | None = None,
    progress: Progress | None = None,
    started: float | None = None,
) -> TrainResult:
    """Fits the ranker on the examples, exports and gates it, validates, packs and signs."""
    started = time.perf_counter() if started is None else started
    report = progress or (lambda stage, done, total: None)
    sets = prepared.sets
    x = np.concatenate([s.features for s in sets])
    y = np.concatenate([s.labels for s in sets])
    first_group = np.cumsum([0] + [s.covered for s in sets[:-1]])
    groups = np.concatenate([s.groups + first for s, first in zip(sets, first_group, strict=True)])
    if y.sum() == 0 or y.sum() == y.shape[0]:
        raise TrainingError(
            "the replay gave no usable examples: is the log long enough per session?"
        )

    report("fit", 0, 1)
    model = _fit(x, y, config)
    ranking: dict[str, Any] = {"objective": "pointwise"}
    if config.listwise is not None:
        model, ranking = _listwise_if_better(model, x, y, groups, config, config.listwise, prepared)
    report("fit", 1, 1)

    log, check_runs, fit_tables = (
        prepared.validation_log,
        prepared.validation_runs,
        prepared.validation_tables,
    )
    held_examples = _examples(log, check_runs, fit_tables, config, seed=config.seed + 99)

    report("export", 0, 1)
    fp32 = to_onnx(model, features.N_FEATURES)
    parity_rows = held_examples.features if held_examples.features.shape[0] else x[:2_000]
    parity = parity_gate(model, fp32, parity_rows)
    if not parity.passed:
        raise TrainingError(f"ONNX export does not match scikit-learn: {parity.message}")
    quantized = quantize_int8(fp32)
    report("export", 1, 1)

    report("validate", 0, 1)
    settings = _settings(config)
    replay = validation_replay(
        log, check_runs, fit_tables, settings, {"fp32": fp32, "int8": quantized.model}
    )
    report("validate", 1, 1)
    precision, quantization_note = _choose_precision(
        replay, quantized.note, quantized.model is not None
    )

    tables = prepared.bundle_tables()
    parts = tables.to_parts()
    parts[FP32_PART] = fp32
    if quantized.model is not None:
        parts[INT8_PART] = quantized.model
    metrics = {
        "validation": replay,
        "parity_max_abs_diff": parity.max_abs_diff,
        "example_recall": float(
            sum(s.covered for s in sets) / max(1, sum(s.positions for s in sets))
        ),
    }
    training = {
        **prepared.log_facts,
        "items": tables.n_items,
        "examples": int(y.shape[0]),
        "positives": int(y.sum()),
        "validation_sessions": int(check_runs.shape[0]),
        "seconds": round(time.perf_counter() - started, 3),
        "model": f"MLPClassifier{config.hidden_layers}",
        **ranking,
    }
    bundle = pack_bundle(
        parts,
        version=version,
        ranker={
            "precision": precision,
            "serve": INT8_PART if precision == "int8" else FP32_PART,
            "fp32": FP32_PART,
            "int8": INT8_PART if quantized.model is not None else None,
            "quantized_operators": quantized.quantized_operators,
            "quantization_note": quantization_note,
        },
        metrics=metrics,
        config=settings,
        training=training,
        rules_version=rules_version,
        feature_schema_version=features.FEATURE_SCHEMA_VERSION,
        private_key_pem=private_key_pem,
        created_at=datetime.now(UTC),
    )
    return TrainResult(bundle=bundle, manifest_metrics=metrics, training=training)


def _settings(config: TrainerConfig) -> dict[str, Any]:
    return {
        "feature_names": list(features.FEATURE_NAMES),
        "window": asdict(config.window),
        "candidates": asdict(config.candidates),
        "tables": asdict(config.tables),
    }


def _examples(
    log: EventLog,
    runs: npt.NDArray[np.int64],
    tables: CandidateTables,
    config: TrainerConfig,
    *,
    seed: int,
) -> ExampleSet:
    return build_examples(
        log,
        runs,
        tables,
        window_config=config.window,
        candidate_config=config.candidates,
        negatives=config.negatives,
        seed=seed,
    )


def _fit(x: npt.NDArray[np.float32], y: npt.NDArray[np.int8], config: TrainerConfig) -> Pipeline:
    network = MLPClassifier(
        hidden_layer_sizes=config.hidden_layers,
        alpha=config.alpha,
        early_stopping=True,
        n_iter_no_change=config.patience,
        max_iter=200,
        random_state=config.seed,
    )
    model = make_pipeline(StandardScaler(), network)
    model.fit(x, y)
    return model


def _listwise_if_better(
    model: Pipeline,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    groups: npt.NDArray[np.int64],
    config: TrainerConfig,
    listwise: ListwiseConfig,
    prepared: Prepared,
) -> tuple[Pipeline, dict[str, Any]]:
    """The network tuned listwise if it ranks the validation sessions better (MRR@20) than
    the pointwise one, else the pointwise one: each log decides, as a small log's few lists
    can teach the listwise step noise."""
    tuned = copy.deepcopy(model)
    losses = fine_tune(tuned, x, y, groups, listwise, seed=config.seed)
    replay = validation_replay(
        prepared.validation_log,
        prepared.validation_runs,
        prepared.validation_tables,
        _settings(config),
        {
            name: to_onnx(m, features.N_FEATURES)
            for name, m in (("pointwise", model), ("listwise", tuned))
        },
    )
    mrr = {name: float(replay[name]["mrr_at_20"]) for name in ("pointwise", "listwise")}
    chosen = "listwise" if mrr["listwise"] > mrr["pointwise"] else "pointwise"
    facts: dict[str, Any] = {"objective": chosen, "objective_validation_mrr": mrr, **losses}
    return (tuned if chosen == "listwise" else model), facts


def _most_recent_runs(
    log: EventLog, bounds: npt.NDArray[np.int64], fraction: float
) -> npt.NDArray[np.int64]:
    ended = log.ts[bounds[1:] - 1]
    n_held = round((bounds.shape[0] - 1) * fraction)
    return np.sort(np.argsort(ended, kind="stable")[len(ended) - n_held :]).astype(np.int64)


def _choose_precision(replay: dict[str, Any], note: str, has_int8: bool) -> tuple[str, str]:
    if not has_int8:
        return "fp32", note
    fp32_hr, int8_hr = replay["fp32"]["hr_at_20"], replay["int8"]["hr_at_20"]
    if no_worse_than(int8_hr, fp32_hr, INT8_MAX_HR_LOSS):
        return "int8", f"{note}; int8 HR@20 {int8_hr:.4f} vs fp32 {fp32_hr:.4f} on validation"
    return "fp32", (
        f"{note}; int8 not served: its validation HR@20 {int8_hr:.4f} is more than "
        f"{INT8_MAX_HR_LOSS:.0%} below fp32's {fp32_hr:.4f}"
    )
