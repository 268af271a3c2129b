"""Score candidate rows with a ranker in its ONNX form.

The ONNX form takes one float32 input named ``features`` of shape ``[None, F]`` and gives
``probabilities`` of shape ``[None, 2]``; column 1 is P(class 1), the score. An
:class:`OnnxRanker` checks that at load and raises :class:`~protocol.errors.BundleError`
(code ``bad_ranker``) when the model does not fit it.

Sessions are tuned for small batches on a shared edge core: one intra-op and one
inter-op thread, sequential execution, every graph optimisation on. Scoring is a plain
``run`` with the output name resolved at load: at 100 rows IOBinding was no faster and
``run_with_ort_values`` was slower.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from protocol.errors import BundleError, FeatureContractError

FEATURES_INPUT: Final = "features"
PROBABILITIES_OUTPUT: Final = "probabilities"

_BAD_RANKER: Final = "bad_ranker"
_FLOAT_TENSOR: Final = "tensor(float)"


class OnnxRanker:
    """One ONNX Runtime session scoring ``[n, n_features]`` float32 rows."""

    __slots__ = ("_fetches", "_n_features", "_session")

    def __init__(self, model: bytes, n_features: int) -> None:
        if n_features < 1:
            raise BundleError(f"n_features must be at least 1, got {n_features}", code=_BAD_RANKER)
        self._n_features = n_features
        self._session = _open_session(model)
        _check_input(self._session, n_features)
        self._fetches = [_resolve_output(self._session)]
        _probe(self._session, self._fetches, n_features)

    @property
    def n_features(self) -> int:
        return self._n_features

    def score(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        """P(class 1) for each row of ``features`` (float32, shape ``[n, n_features]``)."""
        if features.dtype != np.float32 or features.ndim != 2:
            raise FeatureContractError(
                f"features must be a 2-D float32 array, got {features.ndim}-D {features.dtype}"
            )
        if features.shape[1] != self._n_features:
            raise FeatureContractError(
                f"features must have {self._n_features} columns, got {features.shape[1]}"
            )
        if features.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        probabilities: NDArray[np.float32] = self._session.run(
            self._fetches, {FEATURES_INPUT: features}
        )[0]
        return probabilities[:, 1]


def _open_session(model: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    # ONNX Runtime's own errors (InvalidProtobuf, Fail, ...) share no base but Exception.
    except Exception as exc:
        raise BundleError(f"ranker is not a loadable ONNX model: {exc}", code=_BAD_RANKER) from exc


def _check_input(session: Any, n_features: int) -> None:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [node.name for node in inputs]
        raise BundleError(f"ranker must have exactly one input, has {names}", code=_BAD_RANKER)
    (node,) = inputs
    if node.name != FEATURES_INPUT:
        raise BundleError(
            f"ranker input must be named {FEATURES_INPUT!r}, got {node.name!r}", code=_BAD_RANKER
        )
    if node.type != _FLOAT_TENSOR or len(node.shape) != 2:
        raise BundleError(
            f"ranker input must be a 2-D float32 tensor, got {node.type} {node.shape}",
            code=_BAD_RANKER,
        )
    if node.shape[1] != n_features:
        raise BundleError(
            f"ranker expects {node.shape[1]} features per row, the bundle gives {n_features}",
            code=_BAD_RANKER,
        )


def _resolve_output(session: Any) -> str:
    outputs = {node.name: node for node in session.get_outputs()}
    if PROBABILITIES_OUTPUT in outputs:
        node = outputs[PROBABILITIES_OUTPUT]
    elif len(outputs) == 1:
        (node,) = outputs.values()
    else:
        raise BundleError(
            f"ranker has no {PROBABILITIES_OUTPUT!r} output among {sorted(outputs)}",
            code=_BAD_RANKER,
        )
    columns = node.shape[1] if len(node.shape) == 2 else 0
    # A symbolic column count (a name or None) is left to the probe run to check.
    if node.type != _FLOAT_TENSOR or (isinstance(columns, int) and columns != 2):
        raise BundleError(
            f"ranker output {node.name!r} must be a float32 tensor [N, 2], "
            f"got {node.type} {node.shape}",
            code=_BAD_RANKER,
        )
    return str(node.name)


def _probe(session: Any, fetches: list[str], n_features: int) -> None:
    """Score one row so a model that only fails when run is rejected at load."""
    row = np.zeros((1, n_features), dtype=np.float32)
    try:
        probabilities = session.run(fetches, {FEATURES_INPUT: row})[0]
    except Exception as exc:  # ONNX Runtime's errors share no base but Exception.
        raise BundleError(f"ranker fails on a zero row: {exc}", code=_BAD_RANKER) from exc
    if not isinstance(probabilities, np.ndarray):
        raise BundleError(
            f"ranker output is a {type(probabilities).__name__}, not a tensor", code=_BAD_RANKER
        )
    if probabilities.dtype != np.float32 or probabilities.shape != (1, 2):
        raise BundleError(
            "ranker must give float32 probabilities of shape (1, 2) for one row, got "
            f"{probabilities.dtype} {probabilities.shape}",
            code=_BAD_RANKER,
        )
