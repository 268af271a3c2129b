"""Errors of the outcome figures (drawn in the tree of :mod:`protocol.errors`)::

    CentralError
    └── OutcomesError            400  central.outcomes: figures cannot be computed as asked
        └── LoggedDataError      422  logged answers are malformed (names the record)
"""

from __future__ import annotations

from central.errors import CentralError


class OutcomesError(CentralError):
    code = "outcomes_error"
    status = 400


class LoggedDataError(OutcomesError):
    code = "bad_logged_data"
    status = 422
