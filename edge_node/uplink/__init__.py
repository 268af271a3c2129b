"""The local half of the event uplink: a disk spool that keeps every accepted event.

:class:`Uplink` is what the HTTP layer submits encoded events to; :class:`Spool` is the
append-only store underneath, read and committed by the publisher.
"""

from __future__ import annotations

from edge_node.uplink.errors import (
    RecordTooLargeError,
    SpoolClosedError,
    SpoolError,
    SpoolFullError,
    SpoolIOError,
    SpoolLockedError,
    UplinkError,
    UplinkOverloadedError,
    UplinkUnavailableError,
)
from edge_node.uplink.spool import MAX_RECORD_BYTES, Record, RecoveryReport, Spool
from edge_node.uplink.uplink import FsyncPolicy, Uplink, UplinkConfig, UplinkCounters

__all__ = [
    "MAX_RECORD_BYTES",
    "FsyncPolicy",
    "Record",
    "RecordTooLargeError",
    "RecoveryReport",
    "Spool",
    "SpoolClosedError",
    "SpoolError",
    "SpoolFullError",
    "SpoolIOError",
    "SpoolLockedError",
    "Uplink",
    "UplinkConfig",
    "UplinkCounters",
    "UplinkError",
    "UplinkOverloadedError",
    "UplinkUnavailableError",
]
