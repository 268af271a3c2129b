"""Errors of training from the lake (drawn in the tree of :mod:`protocol.errors`)::

    CentralError
    └── EngineError                 400  central.training: a query engine cannot be used
        └── EngineUnavailableError  400  the engine named by --engine is not installed
"""

from __future__ import annotations

from central.errors import CentralError


class EngineError(CentralError):
    code = "engine_error"
    status = 400


class EngineUnavailableError(EngineError):
    code = "engine_unavailable"
    status = 400
