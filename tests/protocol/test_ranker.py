from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from protocol.errors import BundleError, FeatureContractError
from protocol.ranker import FEATURES_INPUT, PROBABILITIES_OUTPUT, OnnxRanker

N_FEATURES = 6
WEIGHTS = np.linspace(-1.0, 1.0, N_FEATURES, dtype=np.float32).reshape(N_FEATURES, 1)


def logistic_model(
    *,
    input_name: str = FEATURES_INPUT,
    input_type: int = TensorProto.FLOAT,
    n_features: int = N_FEATURES,
    output_columns: int = 2,
    extra_input: bool = False,
) -> bytes:
    """features @ w -> sigmoid p -> [1 - p, p, (p ...)] as ``probabilities``."""
    weights = np.resize(WEIGHTS, (n_features, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["as_float", "weights"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["positive"]),
        helper.make_node("Sub", ["one", "positive"], ["negative"]),
        helper.make_node(
            "Concat",
            ["negative"] + ["positive"] * (output_columns - 1),
            [PROBABILITIES_OUTPUT],
            axis=1,
        ),
    ]
    inputs = [helper.make_tensor_value_info(input_name, input_type, [None, n_features])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [None, 1]))
        nodes.append(helper.make_node("Identity", ["extra"], ["extra_out"]))
    outputs = [
        helper.make_tensor_value_info(
            PROBABILITIES_OUTPUT, TensorProto.FLOAT, [None, output_columns]
        )
    ]
    if extra_input:
        outputs.append(helper.make_tensor_value_info("extra_out", TensorProto.FLOAT, [None, 1]))
    graph = helper.make_graph(
        nodes,
        "logistic",
        inputs,
        outputs,
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def expected_scores(features: NDArray[np.float32]) -> NDArray[np.float64]:
    logits = features.astype(np.float64) @ WEIGHTS.astype(np.float64)
    return np.asarray(1.0 / (1.0 + np.exp(-logits[:, 0])))


@pytest.fixture(scope="module")
def ranker() -> OnnxRanker:
    return OnnxRanker(logistic_model(), N_FEATURES)


def test_scores_are_the_probability_of_class_one(ranker: OnnxRanker) -> None:
    features = np.random.default_rng(0).normal(size=(100, N_FEATURES)).astype(np.float32)
    scores = ranker.score(features)
    assert scores.dtype == np.float32
    assert scores.shape == (100,)
    np.testing.assert_allclose(scores, expected_scores(features), atol=1e-6)


def test_one_row_and_non_contiguous_rows_score(ranker: OnnxRanker) -> None:
    features = np.random.default_rng(1).normal(size=(10, N_FEATURES * 2)).astype(np.float32)
    strided = features[:, ::2]
    np.testing.assert_allclose(ranker.score(strided), expected_scores(strided), atol=1e-6)
    np.testing.assert_allclose(ranker.score(strided[:1]), expected_scores(strided[:1]), atol=1e-6)


def test_no_rows_give_an_empty_array(ranker: OnnxRanker) -> None:
    scores = ranker.score(np.empty((0, N_FEATURES), dtype=np.float32))
    assert scores.dtype == np.float32
    assert scores.shape == (0,)


def test_n_features_is_kept(ranker: OnnxRanker) -> None:
    assert ranker.n_features == N_FEATURES


@pytest.mark.parametrize("model", [b"", b"not an onnx model", b"\x08\x07" + b"\xff" * 40])
def test_garbage_bytes_are_a_bad_ranker(model: bytes) -> None:
    with pytest.raises(BundleError) as caught:
        OnnxRanker(model, N_FEATURES)
    assert caught.value.code == "bad_ranker"


def test_a_wrong_feature_count_is_a_bad_ranker() -> None:
    with pytest.raises(BundleError, match="expects 6 features per row") as caught:
        OnnxRanker(logistic_model(), N_FEATURES + 1)
    assert caught.value.code == "bad_ranker"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: logistic_model(input_name="x"), "must be named 'features'"),
        (lambda: logistic_model(input_type=TensorProto.DOUBLE), "2-D float32 tensor"),
        (lambda: logistic_model(extra_input=True), "exactly one input"),
        (lambda: logistic_model(output_columns=3), r"float32 tensor \[N, 2\]"),
    ],
)
def test_a_model_off_the_contract_is_a_bad_ranker(model: Callable[[], bytes], message: str) -> None:
    with pytest.raises(BundleError, match=message) as caught:
        OnnxRanker(model(), N_FEATURES)
    assert caught.value.code == "bad_ranker"


def test_zero_features_is_a_bad_ranker() -> None:
    with pytest.raises(BundleError):
        OnnxRanker(logistic_model(), 0)


@pytest.mark.parametrize(
    "features",
    [
        np.zeros((3, N_FEATURES), dtype=np.float64),
        np.zeros((3, N_FEATURES + 1), dtype=np.float32),
        np.zeros(N_FEATURES, dtype=np.float32),
    ],
)
def test_rows_off_the_feature_contract_are_refused(
    ranker: OnnxRanker, features: NDArray[np.float32]
) -> None:
    with pytest.raises(FeatureContractError):
        ranker.score(features)
