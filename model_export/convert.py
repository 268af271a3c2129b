"""Turn a fitted scikit-learn binary classifier into the ranker's ONNX form.

The form is the one :class:`protocol.ranker.OnnxRanker` serves: one float32 input
``features`` of shape ``[None, F]`` and a plain ``probabilities`` tensor ``[None, 2]``
(ZipMap off), column 1 being P(class 1). Known to convert with parity:
``Pipeline(StandardScaler, MLPClassifier)``, ``LogisticRegression`` and
``HistGradientBoostingClassifier``; any other binary classifier skl2onnx handles is
converted too, and the parity gate decides whether it ships.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common import tree_ensemble
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from model_export.errors import ConversionError
from protocol.ranker import FEATURES_INPUT, PROBABILITIES_OUTPUT

_TREE_PATCH_LOCK = threading.Lock()


def to_onnx(model: object, n_features: int, *, target_opset: int | None = None) -> bytes:
    """Serialized ONNX model scoring ``[N, n_features]`` float32 rows like ``model``."""
    final_estimator = _check_convertible(model, n_features)
    try:
        with _integer_missing_value_flags():
            onnx_model = convert_sklearn(
                model,
                initial_types=[(FEATURES_INPUT, FloatTensorType([None, n_features]))],
                options={id(final_estimator): {"zipmap": False}},
                target_opset=target_opset,
            )
    # skl2onnx reports an unsupported model or option as any of these, with no common base.
    except (RuntimeError, ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise ConversionError(f"skl2onnx cannot convert {_describe(model)}: {exc}") from exc
    output_names = [output.name for output in onnx_model.graph.output]
    if PROBABILITIES_OUTPUT not in output_names:
        raise ConversionError(
            f"converted {_describe(model)} has no {PROBABILITIES_OUTPUT!r} output, "
            f"only {output_names}"
        )
    _flush_subnormal_weights(onnx_model)
    serialized: bytes = onnx_model.SerializeToString()
    return serialized


def _flush_subnormal_weights(onnx_model: onnx.ModelProto) -> None:
    """Zeroes float32 weights below the smallest normal float.

    L2-regularised networks end up with weights around 1e-45; CPUs handle such subnormal
    numbers in microcode, which made an exported MLP score 5x slower than one without
    them. Their contribution is below float32 resolution, so parity is unaffected.
    """
    tiny = np.finfo(np.float32).tiny
    for tensor in onnx_model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        subnormal = (values != 0) & (np.abs(values) < tiny)
        if subnormal.any():
            flushed = np.where(subnormal, 0, values).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(flushed, tensor.name))


def _check_convertible(model: object, n_features: int) -> object:
    """The estimator that carries the converter options, once ``model`` is known usable."""
    if n_features < 1:
        raise ConversionError(f"n_features must be at least 1, got {n_features}")
    if not isinstance(model, BaseEstimator) or not is_classifier(model):
        raise ConversionError(f"{_describe(model)} is not a scikit-learn classifier")
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise ConversionError(f"{_describe(model)} is not fitted") from exc
    classes = np.asarray(getattr(model, "classes_", ())).tolist()
    if len(classes) != 2:
        raise ConversionError(
            f"{_describe(model)} must be a binary classifier, has classes {classes}"
        )
    fitted_features = getattr(model, "n_features_in_", n_features)
    if fitted_features != n_features:
        raise ConversionError(
            f"{_describe(model)} was fitted on {fitted_features} features, not {n_features}"
        )
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def _describe(model: object) -> str:
    if isinstance(model, Pipeline):
        steps = ", ".join(type(step).__name__ for _, step in model.steps)
        return f"Pipeline({steps})"
    return type(model).__name__


@contextmanager
def _integer_missing_value_flags() -> Iterator[None]:
    """Have skl2onnx write ``nodes_missing_value_tracks_true`` as ints for tree ensembles.

    skl2onnx 1.20 passes ``False`` for the leaves of a HistGradientBoosting tree and
    protobuf 7 refuses a bool in ``AttributeProto.ints``. The tree walkers look
    ``add_node`` up in ``skl2onnx.common.tree_ensemble`` at call time, so the function is
    swapped there for one that casts the flag, for the duration of one conversion. The
    lock keeps two concurrent conversions from restoring each other's swap.
    """
    original_add_node = tree_ensemble.add_node

    def add_node_with_integer_flag(*args: Any, **kwargs: Any) -> Any:
        flag = kwargs.get("nodes_missing_value_tracks_true")
        if flag is not None:
            kwargs["nodes_missing_value_tracks_true"] = int(flag)
        return original_add_node(*args, **kwargs)

    with _TREE_PATCH_LOCK:
        tree_ensemble.add_node = add_node_with_integer_flag
        try:
            yield
        finally:
            tree_ensemble.add_node = original_add_node
