"""Errors raised by the event uplink and its on-disk spool.

Every error carries a stable ``code``. Those a caller answers a client with also carry
``retry_after_s``: the events were not accepted, so the client should send them again.

A subtree of :class:`protocol.errors.ProximaError` (the whole tree is drawn there)::

    ProximaError                       (protocol.errors)
    └── UplinkError
        ├── SpoolError                 the on-disk spool cannot do what was asked
        │   ├── SpoolFullError         the unpublished records would exceed ``max_bytes``
        │   ├── RecordTooLargeError    a record is larger than ``MAX_RECORD_BYTES``
        │   ├── SpoolLockedError       another process holds the spool directory
        │   ├── SpoolClosedError       the spool was closed
        │   └── SpoolIOError           a write or fsync failed (see the message)
        ├── UplinkOverloadedError      too many events waiting, or the spool is full (503)
        ├── UplinkUnavailableError     not started, closing, or the disk failed (503)
        ├── AckError                   edge_node.uplink.acks: JetStream refused a message
        │   ├── NoStreamError          no stream takes the subject
        │   ├── AckTimeoutError        not every message of a batch was acknowledged in time
        │   └── ConnectionLostError    the connection was lost with acknowledgements pending
        └── PublisherError             edge_node.uplink.publisher
            └── PublishFailedError     a batch was not fully acknowledged; it is sent again
                └── PublishAckTimeoutError   its acknowledgements did not come in time

The others keep the root's status, 500: they are not answered to a client as they are.
"""

from __future__ import annotations

from protocol.errors import ProximaError


class UplinkError(ProximaError):
    """Root of every error raised by :mod:`edge_node.uplink`."""

    code = "uplink_error"


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

    def __init__(self, message: str, *, path: str = "", errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path  # for the log, never for an answer
        self.errno = errno

    code = "spool_io"


class UplinkOverloadedError(UplinkError):
    """The events were not accepted; the caller answers 503 with ``Retry-After``."""

    code = "uplink_overloaded"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s: float = retry_after_s


class UplinkUnavailableError(UplinkError):
    """The events were not acknowledged; the caller answers 503 with ``Retry-After``."""

    code = "uplink_unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s: float = retry_after_s
