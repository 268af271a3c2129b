"""Errors raised by the central services and the CLI.

CentralError
├── DataFormatError      an input event log is malformed (names file and line)
├── SplitError           the evaluation split leaves nothing to train or test on
└── TrainingError        training could not produce a model
"""

from __future__ import annotations


class CentralError(Exception):
    """Root of every error raised by :mod:`central`."""

    code = "central_error"


class DataFormatError(CentralError):
    code = "bad_data"

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class SplitError(CentralError):
    code = "bad_split"


class TrainingError(CentralError):
    code = "training_failed"
