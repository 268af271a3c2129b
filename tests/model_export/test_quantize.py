from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model_export.convert import to_onnx
from model_export.errors import QuantizationError
from model_export.quantize import QuantizationResult, quantize_int8
from protocol.ranker import FEATURES_INPUT, PROBABILITIES_OUTPUT, OnnxRanker

N_FEATURES = 24


@pytest.fixture(scope="module")
def data() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    features, labels = make_classification(
        n_samples=3000, n_features=N_FEATURES, n_informative=12, random_state=3
    )
    return features.astype(np.float32), labels


@pytest.fixture(scope="module")
def mlp(data: tuple[NDArray[np.float32], NDArray[np.int64]]) -> Any:
    model = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=40, random_state=0)
    )
    with warnings.catch_warnings():
        # A short training run is enough to test quantization; convergence is not the point.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*data)


@pytest.fixture(scope="module")
def mlp_result(mlp: Any) -> QuantizationResult:
    return quantize_int8(to_onnx(mlp, N_FEATURES))


def test_an_mlp_has_its_matmuls_quantized(mlp_result: QuantizationResult) -> None:
    assert mlp_result.model is not None
    assert "MatMul" in mlp_result.quantized_operators
    op_types = {node.op_type for node in onnx.load_from_string(mlp_result.model).graph.node}
    assert "MatMul" not in op_types
    assert "MatMulInteger" in op_types
    assert "MatMul" in mlp_result.note


def test_the_quantized_mlp_keeps_the_ranker_interface(
    mlp: Any, mlp_result: QuantizationResult, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    assert mlp_result.model is not None
    graph = onnx.load_from_string(mlp_result.model).graph
    assert [node.name for node in graph.input] == [FEATURES_INPUT]
    assert PROBABILITIES_OUTPUT in [node.name for node in graph.output]

    ranker = OnnxRanker(mlp_result.model, N_FEATURES)
    features = data[0][:500]
    scores = ranker.score(features)

    assert scores.shape == (500,)
    # int8 moves probabilities a little; the quality gate decides how much is too much.
    assert np.abs(scores - mlp.predict_proba(features)[:, 1]).max() < 0.5


def test_the_quantized_mlp_is_smaller(mlp: Any, mlp_result: QuantizationResult) -> None:
    assert mlp_result.model is not None
    assert len(mlp_result.model) < len(to_onnx(mlp, N_FEATURES))


@pytest.mark.parametrize(
    "model",
    [HistGradientBoostingClassifier(max_iter=10, random_state=0), LogisticRegression()],
    ids=["hist_gradient_boosting", "logistic_regression"],
)
def test_models_without_matmuls_are_left_unquantized(
    model: Any, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    result = quantize_int8(to_onnx(model.fit(*data), N_FEATURES))

    assert result.model is None
    assert result.quantized_operators == []
    assert "nothing to quantize" in result.note


def test_quantizing_does_not_configure_root_logging(
    mlp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    filters_before = list(root.filters)

    quantize_int8(to_onnx(mlp, N_FEATURES))

    assert root.handlers == []
    assert root.filters == filters_before


def test_the_pre_processing_advice_is_not_logged(
    mlp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        quantize_int8(to_onnx(mlp, N_FEATURES))
    assert not [record for record in caplog.records if "pre-processing" in record.getMessage()]


@pytest.mark.parametrize("model", [b"", b"not an onnx model"])
def test_unreadable_models_raise_quantization_error(model: bytes) -> None:
    with pytest.raises(QuantizationError):
        quantize_int8(model)
