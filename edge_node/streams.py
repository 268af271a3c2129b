"""Who is listening for which session's fresh recommendations.

Each subscription is a flag, not a queue: only the newest answer matters, so several
events in a row while a client is slow coalesce into one push (counted as dropped).
Streams are capped three ways: per session, per client address and in all, since an open
WebSocket holds memory and a task for as long as the client likes and never counts
against the in-flight request cap.
"""

from __future__ import annotations

import asyncio

from edge_node.errors import EdgeError
from edge_node.metrics import EdgeMetrics


class Subscription:
    __slots__ = ("address", "changed", "session_id")

    def __init__(self, session_id: str, address: str) -> None:
        self.session_id = session_id
        self.address = address
        self.changed = asyncio.Event()


class TooManyStreams(EdgeError):
    """The session, the client address or the edge has as many streams open as it may."""

    status = 429
    code = "too_many_streams"

    def __init__(self, session_id: str, *, scope: str = "session") -> None:
        field = "session_id" if scope == "session" else None
        where = {"session": f"session {session_id!r}", "address": "this address"}
        super().__init__(f"too many streams for {where.get(scope, 'this edge')}", field=field)
        self.session_id = session_id
        self.scope = scope  # session, address or edge


class StreamHub:
    def __init__(
        self,
        max_per_session: int,
        metrics: EdgeMetrics,
        *,
        max_total: int = 10_000,
        max_per_address: int = 64,
    ) -> None:
        self.max_per_session = max_per_session
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.metrics = metrics
        self._by_session: dict[str, set[Subscription]] = {}
        self._by_address: dict[str, int] = {}
        self.open_streams = 0

    def subscribe(self, session_id: str, address: str = "-") -> Subscription:
        """A new subscription; raises :class:`TooManyStreams` when a cap is reached."""
        if self.open_streams >= self.max_total:
            raise TooManyStreams(session_id, scope="edge")
        if self._by_address.get(address, 0) >= self.max_per_address:
            raise TooManyStreams(session_id, scope="address")
        listeners = self._by_session.get(session_id)
        if listeners is not None and len(listeners) >= self.max_per_session:
            raise TooManyStreams(session_id)
        if listeners is None:
            listeners = self._by_session[session_id] = set()
        subscription = Subscription(session_id, address)
        listeners.add(subscription)
        self._by_address[address] = self._by_address.get(address, 0) + 1
        self.open_streams += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        listeners = self._by_session.get(subscription.session_id)
        if listeners is None or subscription not in listeners:
            return
        listeners.discard(subscription)
        self.open_streams -= 1
        left = self._by_address[subscription.address] - 1
        if left:
            self._by_address[subscription.address] = left
        else:
            del self._by_address[subscription.address]
        if not listeners:
            del self._by_session[subscription.session_id]

    def notify(self, session_id: str) -> None:
        for subscription in self._by_session.get(session_id, ()):
            if subscription.changed.is_set():
                self.metrics.stream_dropped.inc()
            else:
                subscription.changed.set()
