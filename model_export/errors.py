"""Errors raised while turning a trained ranker into the files an edge node serves.

A subtree of :class:`protocol.errors.ProximaError` (the whole tree is drawn there); none
is an HTTP answer, so all keep the root's status (500)::

    ProximaError             (protocol.errors)
    └── ModelExportError
        ├── ConversionError      the model cannot be turned into the ranker's ONNX form
        ├── QuantizationError    ONNX Runtime's quantizer failed or changed the model's interface
        └── GateError            a gate cannot be evaluated on the inputs it was given
"""

from __future__ import annotations

from protocol.errors import ProximaError


class ModelExportError(ProximaError):
    """Root of every error raised by :mod:`model_export`."""

    code = "model_export_error"


class ConversionError(ModelExportError):
    code = "conversion_failed"


class QuantizationError(ModelExportError):
    code = "quantization_failed"


class GateError(ModelExportError):
    code = "gate_unevaluable"
