"""The JetStream side of the bridge: the EVENTS stream, its durable consumer, batch pulls.

:class:`BatchPuller` speaks the JetStream pull protocol over one wildcard inbox subscription
instead of nats-py's ``fetch``: messages land in a buffer from a subscription callback, and
the next pull request is sent as soon as a batch is handed out, so the following batch is
already arriving while the caller forwards the current one. Each request has its own reply
subject, so a late status message of an old request cannot close the current one. A puller
lives on one connection: when that is lost it is abandoned (:meth:`BatchPuller.abandon`) and
the next connection gets a new one. Messages are never acknowledged here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from central.errors import CentralError
from protocol.subjects import DUPLICATE_WINDOW_S

log = logging.getLogger("proxima.central.bridge")

_STATUS: Final = "Status"
_DESCRIPTION: Final = "Description"
_HEARTBEAT: Final = "100"
_NO_RESPONDERS: Final = "503"
_CONFLICT: Final = "409"
_REQUEST_GRACE_S: Final = 1.0  # after `expires`, the client stops waiting for the server's 408


class ConsumerUnavailableError(CentralError):
    """JetStream did not serve the durable consumer (deleted, misconfigured, not ready)."""

    code = "consumer_unavailable"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How central makes the EVENTS stream: bounded, replicated, from the bridge settings."""

    max_bytes: int = 8 << 30
    max_age_s: float = 7 * 86_400.0
    replicas: int = 1
    discard: Literal["old", "new"] = "old"  # what goes when full: the oldest, or new writes

    def config(self, name: str, subjects: Sequence[str]) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=list(subjects),
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            duplicate_window=DUPLICATE_WINDOW_S,
            max_bytes=self.max_bytes,
            max_age=self.max_age_s,
            num_replicas=self.replicas,
            discard=DiscardPolicy.OLD if self.discard == "old" else DiscardPolicy.NEW,
        )


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: Sequence[str],
    limits: StreamLimits | None = None,
) -> StreamInfo:
    """The stream ``name``, created with file storage, the dedupe window and ``limits`` if
    absent. Only central calls this: edges bind to the stream and never make it.

    An existing stream made with other limits is the operator's: the differences are logged
    and its limits, replicas and storage left as they are; only a dedupe window shorter than
    the contract's is lengthened (that loses nothing and dedupe by event id depends on it)."""
    wanted = (limits or StreamLimits()).config(name, subjects)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            info = await js.add_stream(wanted)
            log.info(
                "created JetStream stream %s for %s: %d replica(s), max %d bytes, max age %gs, "
                "discard %s",
                name, ", ".join(subjects), wanted.num_replicas, wanted.max_bytes,
                wanted.max_age, wanted.discard.value if wanted.discard else "old",
            )  # fmt: skip
            return info
        except BadRequestError:  # another process created it in between
            info = await js.stream_info(name)
    return await _reconcile(js, info, wanted)


async def _reconcile(js: JetStreamContext, info: StreamInfo, wanted: StreamConfig) -> StreamInfo:
    have = info.config
    differences = stream_differences(have, wanted)
    if not differences:
        return info
    log.warning(
        "stream %s differs from the bridge's settings: %s", have.name, "; ".join(differences)
    )
    raised = dataclasses.replace(have)
    changed = False
    window = have.duplicate_window or 0.0
    if window < DUPLICATE_WINDOW_S:
        raised.duplicate_window = DUPLICATE_WINDOW_S
        changed = True
    if not changed:
        return info
    try:
        updated: StreamInfo = await js.update_stream(raised)
    except BadRequestError as exc:
        log.warning("stream %s: could not lengthen its dedupe window: %s", have.name, exc)
        return info
    log.info("stream %s: dedupe window lengthened to %gs", have.name, DUPLICATE_WINDOW_S)
    return updated


def stream_differences(have: StreamConfig, wanted: StreamConfig) -> list[str]:
    """What of ``have`` is not as ``wanted``, in words (0 or None: unlimited)."""
    found = []
    for field in ("storage", "num_replicas", "max_bytes", "max_age", "discard", "duplicate_window"):
        current, target = getattr(have, field), getattr(wanted, field)
        if field == "num_replicas":
            current = current or 1
        if field in ("max_bytes", "max_age") and (current is None or current <= 0):
            current = "unlimited"
        if _shown(current) != _shown(target):
            found.append(f"{field} is {_shown(current)}, settings say {_shown(target)}")
    return found


def _shown(value: object) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


async def ensure_consumer(
    js: JetStreamContext, stream: str, durable: str, *, ack_wait_s: float, max_ack_pending: int
) -> ConsumerInfo:
    """The durable pull consumer ``durable`` on ``stream``, created if absent (explicit acks)."""
    try:
        existing: ConsumerInfo = await js.consumer_info(stream, durable)
    except NotFoundError:
        pass
    else:
        return existing
    config = ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=-1,  # never give up on an event: Kafka may be away for a long time
        max_ack_pending=max_ack_pending,
    )
    info = await js.add_consumer(stream, config)
    log.info("created durable consumer %s on stream %s", durable, stream)
    return info


class BatchPuller:
    """Batches of up to ``batch`` messages from a durable pull consumer, one request at a time.

    :meth:`next_batch` returns a full batch as soon as one is buffered, otherwise what has
    arrived once the open request ends or ``linger_s`` after its first message; an empty
    list when nothing arrives before its timeout.
    """

    def __init__(
        self,
        connection: NatsClient,
        stream: str,
        consumer: str,
        *,
        batch: int,
        request_expires_s: float = 5.0,
        linger_s: float = 0.02,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._connection = connection
        self._batch = batch
        self._pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._expires_s = request_expires_s
        self._linger_s = linger_s
        self._inbox = connection.new_inbox()
        self._subscription: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._first_buffered_at = 0.0
        self._requests_sent = 0
        self._current_reply = ""
        self._request_remaining = 0
        self._request_deadline = 0.0
        self._failure: str | None = None
        self._woken = False

    @property
    def buffered(self) -> Sequence[Msg]:
        """Messages delivered to this process and not yet handed out (still unacknowledged)."""
        return tuple(self._buffer)

    async def start(self) -> None:
        self._subscription = await self._connection.subscribe(
            f"{self._inbox}.*", cb=self._on_message
        )

    async def stop(self) -> list[Msg]:
        """Unsubscribes; returns the buffered messages so the caller can release them."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None and not self._connection.is_closed:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        left = list(self._buffer)
        self._buffer.clear()
        self._request_remaining = 0
        return left

    def wake(self) -> None:
        """Makes a waiting :meth:`next_batch` return an empty list now (to stop promptly);
        what is buffered stays for :meth:`stop` to hand back."""
        self._woken = True
        self._arrived.set()

    def abandon(self) -> list[Msg]:
        """Its connection is gone: stops without a word to the server, wakes a waiting
        :meth:`next_batch`, and returns the buffered messages (to release on another one)."""
        self._subscription = None
        left = list(self._buffer)
        self._buffer.clear()
        self._request_remaining = 0
        self.wake()
        return left

    async def next_batch(self, timeout_s: float) -> list[Msg]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._raise_failure()
            now = loop.time()
            if self._woken:
                self._woken = False
                return []
            if len(self._buffer) >= self._batch:
                return await self._take()
            if not self._request_open(now):
                if self._buffer:
                    return await self._take()
                await self._send_request(self._batch)
                continue
            wake_at = deadline
            if self._buffer:
                wake_at = min(deadline, self._first_buffered_at + self._linger_s)
            if now >= wake_at:
                return await self._take()
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wake_at - now)

    def _request_open(self, now: float) -> bool:
        return self._request_remaining > 0 and now < self._request_deadline

    async def _take(self) -> list[Msg]:
        count = min(len(self._buffer), self._batch)
        taken = [self._buffer.popleft() for _ in range(count)]
        loop = asyncio.get_running_loop()
        self._first_buffered_at = loop.time()
        wanted = self._batch - len(self._buffer)
        if self._subscription is not None and wanted > 0 and not self._request_open(loop.time()):
            try:  # prefetch: the next batch arrives while the caller forwards this one
                await self._send_request(wanted)
            except Exception as exc:  # the next call sends it again
                log.debug("pull request not sent: %r", exc)
        return taken

    async def _send_request(self, count: int) -> None:
        self._requests_sent += 1
        reply = f"{self._inbox}.{self._requests_sent}"
        request = {"batch": count, "expires": int(self._expires_s * 1e9)}
        self._current_reply = reply
        self._request_remaining = count
        self._request_deadline = asyncio.get_running_loop().time() + (
            self._expires_s + _REQUEST_GRACE_S
        )
        try:
            await self._connection.publish(
                self._pull_subject, json.dumps(request).encode(), reply=reply
            )
        except BaseException:
            self._request_remaining = 0
            raise

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status is None:
            # Delivered messages carry their stream subject, not the reply subject of the
            # request: count them against the open request (an old one's stragglers only
            # make it end early, and the next request is sent sooner).
            if not self._buffer:
                self._first_buffered_at = asyncio.get_running_loop().time()
            self._buffer.append(msg)
            self._request_remaining -= 1
        elif status == _HEARTBEAT:
            return
        else:
            description = (msg.headers or {}).get(_DESCRIPTION, "")
            if msg.subject == self._current_reply:
                self._request_remaining = 0
            self._note_status(status, description)
        self._arrived.set()

    def _note_status(self, status: str, description: str) -> None:
        """404 and 408 end a request normally. 503 and every 409 (consumer deleted, leader
        changed, too many waiting requests...) become a failure, so that the caller backs
        off instead of asking again at once."""
        if status == _NO_RESPONDERS:
            self._failure = "no JetStream server answered the pull request for the consumer"
        elif status == _CONFLICT:
            self._failure = f"JetStream refused the pull request: {description or status}"
        elif status not in ("404", "408"):
            log.debug("pull request ended with status %s %s", status, description)

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise ConsumerUnavailableError(failure)
