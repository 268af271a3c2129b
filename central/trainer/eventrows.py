"""What the event store keeps of an event, how it tells events apart, and which it keeps."""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from central.eventlog import EventLog, Row
from protocol.events import EVENT_TYPE_CODES, Event


def event_key(event_id: str) -> int:
    """The 64-bit key an event is deduplicated by."""
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def row_of(event: Event) -> Row:
    if event.item_id is None:
        raise ValueError(f"event {event.event_id} names no item")
    return (
        event_key(event.event_id),
        event.session_id,
        event.item_id,
        event.ts,
        EVENT_TYPE_CODES[event.type],
        event.category,
        event.price,
    )


def contains(sorted_keys: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> list[bool]:
    """For each of ``keys``, whether it is in ``sorted_keys``."""
    if sorted_keys.shape[0] == 0:
        return [False] * keys.shape[0]
    found = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.shape[0] - 1)
    present: list[bool] = (sorted_keys[found] == keys).tolist()
    return present


def within_bounds(log: EventLog, max_age_ms: int, max_events: int) -> npt.NDArray[np.bool_]:
    """Rows at most ``max_age_ms`` older than the newest, at most the newest ``max_events``
    of them."""
    if log.n_events == 0:
        return np.ones(0, dtype=bool)
    keep: npt.NDArray[np.bool_] = log.ts >= int(log.ts.max()) - max_age_ms
    excess = int(keep.sum()) - max_events
    if excess > 0:
        inside = np.flatnonzero(keep)
        keep[inside[np.argsort(log.ts[inside], kind="stable")[:excess]]] = False
    return keep
