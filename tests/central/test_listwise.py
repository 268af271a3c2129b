from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from central.trainer.listwise import ListwiseConfig, fine_tune
from model_export.convert import to_onnx
from protocol.ranker import OnnxRanker

LIST = 10


def lists(
    n: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8], npt.NDArray[np.int64]]:
    """Lists whose positive has the highest x0 of its own list; each list's level (x1) moves
    every x0, so what marks the positive is x0 relative to the list, not x0 itself."""
    rng = np.random.default_rng(seed)
    level = np.repeat(rng.normal(0.0, 3.0, n), LIST)
    x0 = level + rng.normal(0.0, 1.0, n * LIST)
    x = np.column_stack((x0, level, rng.normal(size=n * LIST))).astype(np.float32)
    groups = np.repeat(np.arange(n, dtype=np.int64), LIST)
    best = x0.reshape(n, LIST).argmax(axis=1) + np.arange(n) * LIST
    y = np.zeros(n * LIST, dtype=np.int8)
    y[best] = 1
    return x, y, groups


def top_one(scores: npt.NDArray[np.floating], y: npt.NDArray[np.int8]) -> float:
    picked = scores.reshape(-1, LIST).argmax(axis=1)
    return float(y.reshape(-1, LIST)[np.arange(picked.shape[0]), picked].mean())


def pointwise(x: npt.NDArray[np.float32], y: npt.NDArray[np.int8]) -> Pipeline:
    model = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=3, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def test_fine_tuning_learns_the_order_within_each_list() -> None:
    x, y, groups = lists(600, seed=1)
    model = pointwise(x, y)
    test_x, test_y, _ = lists(300, seed=2)
    before = top_one(model.predict_proba(test_x)[:, 1], test_y)
    losses = fine_tune(model, x, y, groups, ListwiseConfig(epochs=60, patience=10), seed=0)
    after = top_one(model.predict_proba(test_x)[:, 1], test_y)
    assert losses["listwise_loss_after"] < losses["listwise_loss_before"]
    assert after > before
    assert after >= 0.8


def test_the_tuned_network_exports_and_scores_as_scikit_learn_does() -> None:
    x, y, groups = lists(200, seed=3)
    model = pointwise(x, y)
    fine_tune(model, x, y, groups, ListwiseConfig(epochs=5), seed=0)
    ranker = OnnxRanker(to_onnx(model, x.shape[1]), x.shape[1])
    assert np.allclose(ranker.score(x), model.predict_proba(x)[:, 1], atol=1e-4)


def test_only_a_relu_network_is_tuned() -> None:
    x, y, groups = lists(50, seed=4)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    with pytest.raises(TypeError, match="relu MLPClassifier"):
        fine_tune(model, x, y, groups, ListwiseConfig(), seed=0)
