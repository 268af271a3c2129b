from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model_export.convert import to_onnx
from model_export.errors import GateError
from model_export.gates import GateResult, no_worse_than, parity_gate
from model_export.quantize import quantize_int8

N_FEATURES = 24


@pytest.fixture(scope="module")
def data() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    features, labels = make_classification(
        n_samples=2000, n_features=N_FEATURES, n_informative=12, random_state=5
    )
    return features.astype(np.float32), labels


@pytest.fixture(scope="module")
def logistic(data: tuple[NDArray[np.float32], NDArray[np.int64]]) -> LogisticRegression:
    return LogisticRegression().fit(*data)


def test_a_faithful_conversion_passes(
    logistic: LogisticRegression, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    result = parity_gate(logistic, to_onnx(logistic, N_FEATURES), data[0][:500])

    assert result.passed
    assert result.rows == 500
    assert 0.0 <= result.max_abs_diff <= 1e-4
    assert "within" in result.message


def test_int8_drift_fails_a_tight_gate(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    mlp = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=30, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(*data)
    quantized = quantize_int8(to_onnx(mlp, N_FEATURES)).model
    assert quantized is not None

    result = parity_gate(mlp, quantized, data[0], max_abs_diff=1e-6)

    assert not result.passed
    assert result.max_abs_diff > 1e-6
    assert "exceeds" in result.message


def test_a_model_the_ranker_refuses_fails(
    logistic: LogisticRegression, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    result = parity_gate(logistic, b"not an onnx model", data[0][:10])

    assert result == GateResult(False, math.inf, 10, result.message)
    assert "refuses" in result.message


def test_a_model_for_other_features_fails(
    logistic: LogisticRegression, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    narrower = LogisticRegression().fit(data[0][:, :-1], data[1])

    result = parity_gate(logistic, to_onnx(narrower, N_FEATURES - 1), data[0][:10])

    assert not result.passed


@pytest.mark.parametrize(
    "holdout",
    [np.zeros(N_FEATURES), np.zeros((0, N_FEATURES)), [["a"] * N_FEATURES]],
    ids=["one_dimensional", "empty", "not_numeric"],
)
def test_unusable_holdouts_raise_gate_error(logistic: LogisticRegression, holdout: Any) -> None:
    with pytest.raises(GateError):
        parity_gate(logistic, to_onnx(logistic, N_FEATURES), holdout)


def test_a_holdout_the_model_cannot_score_raises_gate_error(
    logistic: LogisticRegression, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    with pytest.raises(GateError, match="cannot score"):
        parity_gate(logistic, to_onnx(logistic, N_FEATURES), data[0][:10, :-1])


def test_a_multiclass_model_raises_gate_error(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    features = data[0]
    multiclass = LogisticRegression().fit(features, np.arange(len(features)) % 3)
    binary = LogisticRegression().fit(*data)

    with pytest.raises(GateError, match="binary probabilities"):
        parity_gate(multiclass, to_onnx(binary, N_FEATURES), features[:10])


def test_a_negative_tolerance_raises_gate_error(
    logistic: LogisticRegression, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    with pytest.raises(GateError):
        parity_gate(logistic, to_onnx(logistic, N_FEATURES), data[0][:10], max_abs_diff=-1.0)


@pytest.mark.parametrize(
    ("value", "reference", "tolerance", "expected"),
    [
        (0.245, 0.25, 0.02, True),
        (0.255, 0.25, 0.02, True),
        (0.49, 0.50, 0.02, True),
        (0.2449, 0.25, 0.02, False),
        (0.2551, 0.25, 0.02, True),  # better than the reference is never refused
        (0.9, 0.25, 0.0, True),
        (0.0, 0.0, 0.02, True),
        (0.001, 0.0, 0.02, True),
        (math.nan, 0.25, 0.02, False),
        (0.25, math.nan, 0.02, False),
        (0.2, 0.25, 0.0, False),
    ],
)
def test_no_worse_than(value: float, reference: float, tolerance: float, expected: bool) -> None:
    assert no_worse_than(value, reference, tolerance) is expected


@pytest.mark.parametrize("tolerance", [-0.01, math.nan])
def test_no_worse_than_refuses_a_meaningless_tolerance(tolerance: float) -> None:
    with pytest.raises(GateError):
        no_worse_than(0.25, 0.25, tolerance)
