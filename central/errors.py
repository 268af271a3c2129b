"""Errors raised by the central services and the CLI.

The subtree of :class:`protocol.errors.ProximaError` that :mod:`central` raises (the
other central modules hang their own errors under :class:`CentralError`; the whole tree
is drawn in :mod:`protocol.errors`)::

    ProximaError                 (protocol.errors)
    └── CentralError             500
        ├── DataFormatError      400  an input event log is malformed (names file and line)
        ├── SplitError           400  the evaluation split leaves nothing to train or test on
        └── TrainingError        500  training could not produce a model
"""

from __future__ import annotations

from protocol.errors import ProximaError


class CentralError(ProximaError):
    """Root of every error raised by :mod:`central`."""

    code = "central_error"
    status = 500


class DataFormatError(CentralError):
    code = "bad_data"
    status = 400

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class SplitError(CentralError):
    code = "bad_split"
    status = 400


class TrainingError(CentralError):
    code = "training_failed"
