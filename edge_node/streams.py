"""Who is listening for which session's fresh recommendations.

Each subscription is a flag, not a queue: only the newest answer matters, so several
events in a row while a client is slow coalesce into one push (counted as dropped).
Subscriptions per session are capped.
"""

from __future__ import annotations

import asyncio

from edge_node.errors import EdgeError
from edge_node.metrics import EdgeMetrics


class Subscription:
    __slots__ = ("changed", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.changed = asyncio.Event()


class TooManyStreams(EdgeError):
    """The session has as many streams open as it may."""

    status = 429
    code = "too_many_streams"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"too many streams for session {session_id!r}", field="session_id")
        self.session_id = session_id


class StreamHub:
    def __init__(self, max_per_session: int, metrics: EdgeMetrics) -> None:
        self.max_per_session = max_per_session
        self.metrics = metrics
        self._by_session: dict[str, set[Subscription]] = {}
        self.open_streams = 0

    def subscribe(self, session_id: str) -> Subscription:
        listeners = self._by_session.setdefault(session_id, set())
        if len(listeners) >= self.max_per_session:
            raise TooManyStreams(session_id)
        subscription = Subscription(session_id)
        listeners.add(subscription)
        self.open_streams += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        listeners = self._by_session.get(subscription.session_id)
        if listeners is None or subscription not in listeners:
            return
        listeners.discard(subscription)
        self.open_streams -= 1
        if not listeners:
            del self._by_session[subscription.session_id]

    def notify(self, session_id: str) -> None:
        for subscription in self._by_session.get(session_id, ()):
            if subscription.changed.is_set():
                self.metrics.stream_dropped.inc()
            else:
                subscription.changed.set()
