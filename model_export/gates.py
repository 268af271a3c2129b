"""Checks a ranker passes before it ships.

* :func:`parity_gate`: the ONNX model, scored the way an edge node scores it (through
  :class:`protocol.ranker.OnnxRanker`), gives the same P(class 1) as scikit-learn on
  held-out rows.
* :func:`no_worse_than`: a quality figure is at most a relative tolerance below a
  reference, as in "int8 HR@20 within 2% of fp32" (the figures are computed elsewhere;
  a quantized model that scores better is never held back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model_export.errors import GateError
from protocol.errors import BundleError
from protocol.ranker import OnnxRanker

_ROUNDING_SLACK: Final = 1e-9


class ProbabilisticClassifier(Protocol):
    def predict_proba(self, features: Any, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class GateResult:
    passed: bool
    max_abs_diff: float
    rows: int
    message: str


def parity_gate(
    model: ProbabilisticClassifier,
    onnx_bytes: bytes,
    X_holdout: ArrayLike,
    *,
    max_abs_diff: float = 1e-4,
) -> GateResult:
    """Whether ``onnx_bytes`` scores ``X_holdout`` within ``max_abs_diff`` of ``model``.

    A model the ranker refuses to load fails the gate; inputs the gate cannot use (an
    empty or non-2-D holdout, a model without binary probabilities) raise ``GateError``.
    """
    if not max_abs_diff >= 0:
        raise GateError(f"max_abs_diff must be a non-negative number, got {max_abs_diff}")
    features = _holdout_matrix(X_holdout)
    rows = features.shape[0]
    expected = _reference_scores(model, features)
    try:
        ranker = OnnxRanker(onnx_bytes, features.shape[1])
    except BundleError as exc:
        return GateResult(False, math.inf, rows, f"the ranker refuses the ONNX model: {exc}")
    actual = ranker.score(features)
    worst = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    passed = worst <= max_abs_diff  # False for NaN too
    verdict = "within" if passed else "exceeds"
    return GateResult(
        passed,
        worst,
        rows,
        f"max |Δp| {worst:.3g} over {rows} rows {verdict} the {max_abs_diff:g} allowed",
    )


def no_worse_than(value: float, reference: float, /, tolerance: float) -> bool:
    """``reference - value <= tolerance * |reference|``; False if either is NaN.

    A value exactly on the boundary (0.49 against 0.50 at 2%) counts as within, whatever
    the last bit of the float subtraction says.
    """
    if not tolerance >= 0:
        raise GateError(f"tolerance must be a non-negative number, got {tolerance}")
    return reference - value <= tolerance * abs(reference) * (1.0 + _ROUNDING_SLACK)


def _holdout_matrix(holdout: ArrayLike) -> NDArray[np.float32]:
    try:
        features = np.ascontiguousarray(holdout, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise GateError(f"the holdout is not a numeric matrix: {exc}") from exc
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise GateError(f"the holdout must be a non-empty 2-D matrix, got shape {features.shape}")
    return features


def _reference_scores(
    model: ProbabilisticClassifier, features: NDArray[np.float32]
) -> NDArray[np.float64]:
    try:
        probabilities = np.asarray(model.predict_proba(features), dtype=np.float64)
    # scikit-learn signals a wrong feature count or an unfitted model with these.
    except (ValueError, AttributeError, TypeError) as exc:
        raise GateError(f"the scikit-learn model cannot score the holdout: {exc}") from exc
    if probabilities.shape != (features.shape[0], 2):
        raise GateError(
            "the scikit-learn model must give binary probabilities of shape "
            f"({features.shape[0]}, 2), got {probabilities.shape}"
        )
    return probabilities[:, 1]
