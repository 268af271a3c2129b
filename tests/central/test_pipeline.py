from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from central.datasets import read_log
from central.errors import TrainingError
from central.eventlog import EventLog, build_log
from central.trainer.pipeline import (
    FP32_PART,
    INT8_MAX_HR_LOSS,
    INT8_PART,
    TrainerConfig,
    TrainResult,
    _choose_precision,
    train_bundle,
)
from devtools.loggen import GeneratorConfig, generate_file
from protocol.bundle import Bundle, read_bundle
from protocol.errors import SignatureError
from protocol.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from protocol.keys import generate_keypair, load_public_key
from protocol.ranker import OnnxRanker
from protocol.tables import TABLES_PREFIX, CandidateTables

SMALL = TrainerConfig(max_positions=1_500)


@dataclass(frozen=True)
class Trained:
    log: EventLog
    result: TrainResult
    bundle: Bundle
    stages: list[tuple[str, int, int]]


def generated_log(directory: Path, sessions: int, seed: int = 3) -> EventLog:
    path = directory / f"log-{sessions}-{seed}.csv"
    generate_file(path, GeneratorConfig(sessions=sessions, items=400, categories=10, seed=seed))
    log, _ = read_log(path, "csv")
    return log


KEYS = generate_keypair()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    log = generated_log(tmp_path_factory.mktemp("pipeline"), 300)
    stages: list[tuple[str, int, int]] = []
    result = train_bundle(
        log, SMALL, version=42, private_key_pem=KEYS[0], rules_version="rules-3",
        progress=lambda stage, done, total: stages.append((stage, done, total)),
    )
    bundle = read_bundle(result.bundle, load_public_key(KEYS[1]))
    return Trained(log, result, bundle, stages)


def test_the_bundle_verifies_with_the_public_key(trained: Trained) -> None:
    manifest = trained.bundle.manifest
    assert manifest.version == 42
    assert manifest.rules_version == "rules-3"
    assert manifest.feature_schema_version == FEATURE_SCHEMA_VERSION
    assert manifest.config["feature_names"] == list(FEATURE_NAMES)


def test_the_bundle_does_not_verify_with_another_key(trained: Trained) -> None:
    _, other_public = generate_keypair()
    with pytest.raises(SignatureError):
        read_bundle(trained.result.bundle, load_public_key(other_public))


def test_the_bundle_holds_both_rankers_and_the_tables(trained: Trained) -> None:
    parts = trained.bundle.parts
    ranker = trained.bundle.manifest.ranker
    assert ranker["fp32"] == FP32_PART
    assert ranker["int8"] == INT8_PART
    assert ranker["quantized_operators"]
    assert ranker["serve"] == (INT8_PART if ranker["precision"] == "int8" else FP32_PART)
    for name in (FP32_PART, INT8_PART):
        assert OnnxRanker(parts[name], len(FEATURE_NAMES)).n_features == len(FEATURE_NAMES)
    assert len(parts[INT8_PART]) < len(parts[FP32_PART])
    tables = CandidateTables.from_parts(parts)
    assert all(name.startswith(TABLES_PREFIX) for name in parts if name not in ranker.values())
    assert tables.n_items == trained.result.training["items"]


def test_the_bundle_tables_cover_the_whole_log(trained: Trained) -> None:
    tables = CandidateTables.from_parts(trained.bundle.parts)
    assert float(tables.pop_all.sum()) == trained.log.n_events
    assert tables.n_items == len(np.unique(trained.log.item))


def test_validation_metrics_are_recorded(trained: Trained) -> None:
    metrics = trained.bundle.manifest.metrics
    assert metrics == trained.result.manifest_metrics
    validation = metrics["validation"]
    assert set(validation) == {"fp32", "int8"}
    for figures in validation.values():
        assert figures["predictions"] > 0
        assert 0.0 < figures["hr_at_20"] <= 1.0
        assert 0.0 < figures["mrr_at_20"] <= figures["hr_at_20"]
    assert validation["fp32"]["predictions"] == validation["int8"]["predictions"]
    assert 0.0 < metrics["example_recall"] <= 1.0


def test_onnx_parity_is_within_the_gate(trained: Trained) -> None:
    assert 0.0 <= trained.bundle.manifest.metrics["parity_max_abs_diff"] <= 1e-4


def test_precision_follows_the_int8_gate(trained: Trained) -> None:
    validation = trained.bundle.manifest.metrics["validation"]
    fp32_hr, int8_hr = validation["fp32"]["hr_at_20"], validation["int8"]["hr_at_20"]
    expected = "int8" if int8_hr >= fp32_hr * (1 - INT8_MAX_HR_LOSS) else "fp32"
    ranker = trained.bundle.manifest.ranker
    assert ranker["precision"] == expected
    assert f"{int8_hr:.4f}" in ranker["quantization_note"]


def test_training_facts_are_recorded(trained: Trained) -> None:
    training = trained.bundle.manifest.training
    assert training == trained.result.training
    assert training["events"] == trained.log.n_events
    assert training["sessions"] == 300
    assert training["first_ts"] == int(trained.log.ts.min())
    assert training["last_ts"] == int(trained.log.ts.max())
    assert 0 < training["positives"] < training["examples"]
    assert training["validation_sessions"] > 0
    assert training["model"].startswith("MLPClassifier")


def test_progress_reports_every_stage_in_order(trained: Trained) -> None:
    stages = [stage for stage, _, _ in trained.stages]
    order = list(dict.fromkeys(stages))
    assert order == ["examples", "fit", "export", "validate", "tables"]
    folds = SMALL.folds
    examples = [(done, total) for stage, done, total in trained.stages if stage == "examples"]
    assert examples == [(fold, folds) for fold in range(folds + 1)]
    for stage in order[1:]:
        assert [(d, t) for s, d, t in trained.stages if s == stage] == [(0, 1), (1, 1)]


def test_max_positions_bounds_the_positions_replayed(trained: Trained) -> None:
    few = train_bundle(trained.log, TrainerConfig(max_positions=200), version=1,
                       private_key_pem=KEYS[0])
    # Sessions are sampled to about 200 positions; each covered one gives one positive and
    # up to ``negatives`` negatives.
    assert 0 < few.training["positives"] <= 300
    assert few.training["examples"] <= few.training["positives"] * (SMALL.negatives + 1)
    assert few.training["positives"] < trained.result.training["positives"]


def test_the_same_seed_gives_the_same_metrics(trained: Trained) -> None:
    again = train_bundle(trained.log, SMALL, version=42, private_key_pem=KEYS[0])
    assert again.manifest_metrics == trained.result.manifest_metrics
    assert again.training["examples"] == trained.result.training["examples"]


def test_too_few_sessions_are_refused(tmp_path: Path) -> None:
    log = generated_log(tmp_path, 2 * SMALL.folds - 1)
    with pytest.raises(TrainingError, match="sessions"):
        train_bundle(log, SMALL, version=1, private_key_pem=KEYS[0])


def test_a_log_of_single_event_sessions_is_refused() -> None:
    n = 40
    log = build_log([f"s{i}" for i in range(n)], [f"i{i % 7}" for i in range(n)],
                    [1_000 * i for i in range(n)], [0] * n, [None] * n, [None] * n)
    with pytest.raises(TrainingError):
        train_bundle(log, SMALL, version=1, private_key_pem=KEYS[0])


def replay(fp32: float, int8: float) -> dict[str, Any]:
    return {
        "fp32": {"hr_at_20": fp32, "mrr_at_20": fp32 / 2, "predictions": 100},
        "int8": {"hr_at_20": int8, "mrr_at_20": int8 / 2, "predictions": 100},
    }


@pytest.mark.parametrize(
    ("fp32", "int8", "served"),
    [
        (0.50, 0.50, "int8"),
        (0.50, 0.52, "int8"),
        (0.50, 0.49, "int8"),  # exactly 2 % below
        (0.50, 0.4899, "fp32"),
        (0.50, 0.30, "fp32"),
        (0.0, 0.0, "int8"),
    ],
)
def test_int8_is_served_only_within_two_percent_of_fp32(
    fp32: float, int8: float, served: str
) -> None:
    precision, note = _choose_precision(replay(fp32, int8), "quantized", has_int8=True)
    assert precision == served
    assert note.startswith("quantized; ")
    if served == "fp32":
        assert "not served" in note


def test_without_an_int8_model_fp32_is_served() -> None:
    precision, note = _choose_precision({}, "nothing to quantize", has_int8=False)
    assert (precision, note) == ("fp32", "nothing to quantize")


def test_the_objective_is_the_one_that_ranks_the_validation_sessions_better(
    trained: Trained,
) -> None:
    training = trained.bundle.manifest.training
    mrr = training["objective_validation_mrr"]
    assert set(mrr) == {"pointwise", "listwise"}
    better = "listwise" if mrr["listwise"] > mrr["pointwise"] else "pointwise"
    assert training["objective"] == better
    assert training["listwise_loss_after"] <= training["listwise_loss_before"]
