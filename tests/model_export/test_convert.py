from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from skl2onnx.common import tree_ensemble
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from model_export.convert import to_onnx
from model_export.errors import ConversionError
from protocol.ranker import FEATURES_INPUT, PROBABILITIES_OUTPUT, OnnxRanker

N_FEATURES = 24


@pytest.fixture(scope="module")
def data() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    features, labels = make_classification(
        n_samples=3000, n_features=N_FEATURES, n_informative=12, random_state=7
    )
    return features.astype(np.float32), labels


def mlp_pipeline() -> Pipeline:
    return make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=40, random_state=0)
    )


def fit(model: Any, features: NDArray[np.float32], labels: NDArray[np.int64]) -> Any:
    with warnings.catch_warnings():
        # A short training run is enough to test conversion; convergence is not the point.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(features, labels)


MODEL_KINDS: dict[str, Callable[[], Any]] = {
    "mlp_pipeline": mlp_pipeline,
    "logistic_regression": lambda: LogisticRegression(max_iter=500),
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0),
}


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_conversion_matches_scikit_learn(
    kind: str, data: tuple[NDArray[np.float32], NDArray[np.int64]]
) -> None:
    features, labels = data
    model = fit(MODEL_KINDS[kind](), features[:2000], labels[:2000])
    holdout = features[2000:]

    ranker = OnnxRanker(to_onnx(model, N_FEATURES), N_FEATURES)

    difference = np.abs(ranker.score(holdout) - model.predict_proba(holdout)[:, 1])
    assert difference.max() <= 1e-4


def test_the_onnx_form_has_the_ranker_interface(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    model = fit(LogisticRegression(), *data)
    graph = onnx.load_from_string(to_onnx(model, N_FEATURES)).graph

    (single_input,) = graph.input
    assert single_input.name == FEATURES_INPUT
    assert single_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = single_input.type.tensor_type.shape.dim
    assert [dim.dim_value for dim in dims][1:] == [N_FEATURES]
    probabilities = next(out for out in graph.output if out.name == PROBABILITIES_OUTPUT)
    assert probabilities.type.HasField("tensor_type")  # not a ZipMap sequence of maps


def test_hist_gradient_boosting_with_missing_values_matches(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    features, labels = data
    with_missing = features.copy()
    with_missing[::5, 3] = np.nan
    with_missing[::7, 11] = np.nan
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(with_missing, labels)

    ranker = OnnxRanker(to_onnx(model, N_FEATURES), N_FEATURES)

    difference = np.abs(ranker.score(with_missing) - model.predict_proba(with_missing)[:, 1])
    assert difference.max() <= 1e-4


def test_the_skl2onnx_patch_is_undone_after_conversion(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    original = tree_ensemble.add_node
    to_onnx(HistGradientBoostingClassifier(max_iter=5).fit(*data), N_FEATURES)
    with pytest.raises(ConversionError):
        to_onnx(LogisticRegression().fit(*data), N_FEATURES + 1)
    assert tree_ensemble.add_node is original


def test_an_explicit_target_opset_is_used(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    model = fit(mlp_pipeline(), *data)
    opsets = {
        entry.domain: entry.version
        for entry in onnx.load_from_string(to_onnx(model, N_FEATURES, target_opset=15)).opset_import
    }
    assert opsets[""] <= 15


class UnknownClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A classifier skl2onnx has no converter for."""

    def fit(self, features: NDArray[np.float32], labels: NDArray[np.int64]) -> UnknownClassifier:
        self.classes_ = np.unique(labels)
        self.n_features_in_ = features.shape[1]
        return self

    def predict_proba(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        return np.full((features.shape[0], 2), 0.5)


def test_unsupported_models_raise_conversion_error(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    features, labels = data
    cases: list[tuple[object, int, str]] = [
        (object(), N_FEATURES, "not a scikit-learn classifier"),
        (LinearRegression().fit(features, labels), N_FEATURES, "not a scikit-learn classifier"),
        (LogisticRegression(), N_FEATURES, "not fitted"),
        (fit(LogisticRegression(), features, np.arange(labels.size) % 3), N_FEATURES, "binary"),
        (fit(LogisticRegression(), features, labels), N_FEATURES - 1, "fitted on 24 features"),
        (UnknownClassifier().fit(features, labels), N_FEATURES, "skl2onnx cannot convert"),
    ]
    for model, n_features, message in cases:
        with pytest.raises(ConversionError, match=message):
            to_onnx(model, n_features)


def test_subnormal_weights_are_flushed_without_changing_scores(
    data: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> None:
    features, labels = data
    model = fit(mlp_pipeline(), features, labels)
    network = model[-1]
    network.coefs_[0][:5, 0] = 1e-44  # what strong L2 leaves behind: slow for CPUs
    exported = onnx.load_from_string(to_onnx(model, features.shape[1]))
    tiny = np.finfo(np.float32).tiny
    for tensor in exported.graph.initializer:
        values = onnx.numpy_helper.to_array(tensor)
        if values.dtype == np.float32:
            assert not ((values != 0) & (np.abs(values) < tiny)).any(), tensor.name
    expected = model.predict_proba(features)[:, 1]
    scored = OnnxRanker(exported.SerializeToString(), features.shape[1]).score(features)
    assert np.max(np.abs(scored - expected)) <= 1e-4
