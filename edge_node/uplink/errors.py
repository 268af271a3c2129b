"""Errors raised by the event uplink and its on-disk spool.

Every error carries a stable ``code``. Those a caller answers a client with also carry
``retry_after_s``: the events were not accepted, so the client should send them again.

    UplinkError
    ├── SpoolError                 the on-disk spool cannot do what was asked
    │   ├── SpoolFullError         the unpublished records would exceed ``max_bytes``
    │   ├── RecordTooLargeError    a record is larger than ``MAX_RECORD_BYTES``
    │   ├── SpoolLockedError       another process holds the spool directory
    │   ├── SpoolClosedError       the spool was closed
    │   └── SpoolIOError           a write or fsync failed (see the message)
    ├── UplinkOverloadedError      too many events waiting, or the spool is full (503)
    └── UplinkUnavailableError     not started, closing, or the disk failed (503)
"""

from __future__ import annotations


class UplinkError(Exception):
    """Root of every error raised by :mod:`edge_node.uplink`."""

    code: str = "uplink_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpoolError(UplinkError):
    code = "spool_error"


class SpoolFullError(SpoolError):
    code = "spool_full"


class RecordTooLargeError(SpoolError):
    code = "record_too_large"


class SpoolLockedError(SpoolError):
    code = "spool_locked"


class SpoolClosedError(SpoolError):
    code = "spool_closed"


class SpoolIOError(SpoolError):
    """A write or fsync failed.

    A failed write leaves nothing of its records in the spool. A failed fsync leaves the
    records in the spool (and they may be published), but they were not acknowledged.
    """

    code = "spool_io"


class UplinkOverloadedError(UplinkError):
    """The events were not accepted; the caller answers 503 with ``Retry-After``."""

    code = "uplink_overloaded"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UplinkUnavailableError(UplinkError):
    """The events were not acknowledged; the caller answers 503 with ``Retry-After``."""

    code = "uplink_unavailable"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
