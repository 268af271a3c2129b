"""How ``proxima latency`` gets its figures: from a running monitor, or by listening itself.

:func:`ask_monitor` sends a :class:`~central.monitor.query.LatencyQuery` to the monitor and
returns its summary, or None when no monitor answers. :class:`TelemetryListener` is the
fallback: it subscribes to the edges' telemetry into a store of its own and computes the
same summary from what it heard (``source: "telemetry"``), which covers only the time it
listened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from central.monitor.errors import MonitorError, MonitorQueryError
from central.monitor.figures import latency_summary
from central.monitor.query import LatencyQuery
from central.monitor.service import ingest
from central.monitor.store import TelemetryStore
from protocol.subjects import MONITOR_REQUEST_SUBJECT, TELEMETRY_SUBJECTS, check_token


class MonitorReplyError(MonitorError):
    """The monitor answered with an error, or with something that is not a summary."""

    code = "monitor_reply"
    status = 502


async def ask_monitor(
    client: NatsClient,
    query: LatencyQuery,
    *,
    timeout_s: float,
    subject: str = MONITOR_REQUEST_SUBJECT,
) -> dict[str, Any] | None:
    try:
        reply = await client.request(subject, query.encode(), timeout=timeout_s)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return None
    try:
        body = json.loads(reply.data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MonitorReplyError(f"the monitor's answer is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MonitorReplyError("the monitor's answer is not a JSON object")
    error = body.get("error")
    if isinstance(error, dict):
        field = error.get("field")
        message = f"the monitor refused the query: {error.get('message')}"
        if error.get("code") == MonitorQueryError.code:
            raise MonitorQueryError(message, field=field if isinstance(field, str) else None)
        raise MonitorReplyError(f"{message} [{error.get('code')}]")
    if not isinstance(body.get("regions"), list):
        raise MonitorReplyError("the monitor's answer has no regions")
    return body


class TelemetryListener:
    """Telemetry of one region (or all) into a store, from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        client: NatsClient,
        *,
        region: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.subject = TELEMETRY_SUBJECTS
        if region is not None:
            self.subject = f"telemetry.{check_token(region, 'region')}.*"
        # a short listen keeps every report it hears: no spacing check, whatever the rate
        self.store = TelemetryStore(min_spacing_s=0, clock=clock)
        self.malformed = 0
        self.started_at: float | None = None
        self._clock = clock
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.client.subscribe(
            self.subject, cb=self._on_message, pending_msgs_limit=10_000
        )
        await self.client.flush()
        self.started_at = self._clock()

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None and not self.client.is_closed:
            await subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        if ingest(self.store, msg.subject, msg.data).outcome == "malformed":
            self.malformed += 1

    def summary(self, query: LatencyQuery) -> dict[str, Any]:
        now = self._clock()
        body = latency_summary(self.store, query, source="telemetry", now=now)
        listened = now - self.started_at if self.started_at is not None else 0.0
        body["listened_s"] = round(listened, 3)
        body["malformed"] = self.malformed
        return body
