"""The edge's event publisher: drains the on-disk spool into the JetStream ``EVENTS`` stream.

Records are read from the spool in order, up to ``batch`` at a time, and published to
``events.<region>.<node>`` with ``Nats-Msg-Id: <event_id>``, all of a batch in flight at once.
Once JetStream has acknowledged every record of a batch, the spool is committed up to its
last record (one fsync per batch, overlapping the next batch's round trip). Any failure
rewinds the spool to the committed cursor and the batch is sent again after a capped,
jittered backoff: delivery is at-least-once, and JetStream's duplicate window (by
``Nats-Msg-Id``) drops the records sent twice.

Records go out in spool order, and JetStream stores them in that order when a server dies
or a connection drops: the process's :class:`~runtime.supervisor.BusSupervisor` replaces a
lost connection rather than resuming it (nats-py's own reconnecting is off), so nothing of a
failed attempt is replayed ahead of the batch sent again; the records that got through the
first time are dropped as duplicates and the rest follow in order. Two cases can still
store records out of order: a server that stalled (an ack timeout also replaces the
connection) and then reads the old connection's last bytes while the new one sends, and a
JetStream that refuses single records of a batch while taking later ones. Consumers dedupe
by ``event_id`` and order by the events' times.

A record that is not a valid event is logged, counted and committed with its batch: one bad
record never blocks the spool.

The publisher is a :class:`~runtime.supervisor.BusListener`: it opens its acknowledgement
inbox on each connection the supervisor makes and drops it when that connection is lost. An
edge starts and accepts events while NATS is down, and they wait in the spool until it is
back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from edge_node.uplink.acks import (
    AckError,
    AckTimeoutError,
    BatchAcks,
    NoStreamError,
    Outgoing,
    RecordsRefusedError,
)
from edge_node.uplink.deadletter import DEFAULT_MAX_BYTES as DEFAULT_DEAD_LETTER_BYTES
from edge_node.uplink.deadletter import DeadLetters
from edge_node.uplink.errors import SpoolClosedError, UplinkError
from edge_node.uplink.spool import Record, Spool
from edge_node.uplink.uplink import Uplink
from protocol.codec import decode_msgpack_event, event_id_of
from protocol.errors import EventError
from protocol.subjects import (
    DUPLICATE_WINDOW_S,
    EVENTS_STREAM,
    MSG_ID_HEADER,
    events_subject,
)
from runtime.backoff import Backoff
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, describe_error, redact

log = logging.getLogger("proxima.edge.publisher")

# Of close()'s timeout, this much (at most a quarter of it) is kept for stopping the drain
# (its last commit) once the time for publishing is up.
_SHUTDOWN_RESERVE_S: Final = 0.5
DEAD_LETTER_AFTER: Final = 3  # refusals in a row that make a record dead, whatever the code
_REPEATED_ERROR_LOG_INTERVAL_S: Final = 30.0
_REMEMBERED_ERRORS: Final = 64


class PublisherError(UplinkError):
    code = "publisher_error"


class PublishFailedError(PublisherError):
    """A batch was not fully acknowledged; it is rewound and sent again."""

    code = "publish_failed"


class PublishAckTimeoutError(PublishFailedError):
    """The batch's acknowledgements did not all come in time; the connection is replaced."""

    code = "ack_timeout"


@dataclass(frozen=True, slots=True)
class PublisherStatus:
    connected: bool
    published: int  # records JetStream acknowledged
    duplicates: int  # of those, records JetStream already had (a resend after a lost ack)
    skipped_records: int  # records that were not valid events: committed, never published
    publish_errors: int  # batches that failed and were sent again
    last_error: str | None  # never with credentials
    lag_s: float  # age of the oldest record not committed yet
    pending_records: int
    pending_bytes: int
    reconnects: int
    stream_missing: bool = False  # JetStream has no EVENTS stream: the edge is degraded
    dead_lettered: int = 0  # records JetStream refused for good, moved to the dead-letter file


@dataclass(frozen=True, eq=False, slots=True)
class _Link:
    """What the publisher holds on one bus connection: its JetStream and its ack inbox."""

    connection: BusConnection
    jetstream: JetStreamContext
    acks: BatchAcks


class EventPublisher(BusListener):
    """Drains the spool over the bus connection the :class:`BusSupervisor` keeps."""

    def __init__(
        self,
        uplink: Uplink,
        bus: BusSupervisor,
        *,
        region: str,
        node: str,
        batch: int = 256,
        ack_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
        dead_letter_max_bytes: int = DEFAULT_DEAD_LETTER_BYTES,
    ) -> None:
        if batch < 1 or ack_timeout_s <= 0:
            raise ValueError("batch must be at least 1 and ack_timeout_s positive")
        self._uplink = uplink
        self._bus = bus
        self.subject = events_subject(region, node)
        self.batch = batch
        self.ack_timeout_s = ack_timeout_s
        self.max_backoff_s = max_backoff_s
        self._lifecycle = Lifecycle("the event publisher")
        self._link: _Link | None = None
        self._linked = asyncio.Event()
        self._links_made = 0
        self._stream_checked = False
        self._stream_missing = False  # central has not created the EVENTS stream yet
        self._dead_letters = DeadLetters(uplink.config.directory, dead_letter_max_bytes)
        self._refused_before: dict[int, int] = {}  # spool seq -> refusals in a row (one batch)
        self._drain_task: asyncio.Task[None] | None = None
        self._published = 0
        self._duplicates = 0
        self._skipped = 0
        self._last_skipped_seq = 0
        self._publish_errors = 0
        self._last_error: str | None = None
        self._logged_at: dict[str, float] = {}  # error message -> when it was last logged

    @property
    def status(self) -> PublisherStatus:
        try:
            spool: Spool | None = self._uplink.spool
        except UplinkError:
            spool = None
        link = self._link
        return PublisherStatus(
            connected=link is not None and link.connection.usable,
            published=self._published,
            duplicates=self._duplicates,
            skipped_records=self._skipped,
            publish_errors=self._publish_errors,
            last_error=self._last_error or self._bus.status.last_error,
            lag_s=spool.oldest_pending_age_s if spool is not None else 0.0,
            pending_records=spool.pending_records if spool is not None else 0,
            pending_bytes=spool.pending_bytes if spool is not None else 0,
            reconnects=max(0, self._links_made - 1),
            stream_missing=self._stream_missing,
            dead_lettered=self._dead_letters.quarantined,
        )

    async def start(self) -> None:
        """Starts draining the spool over the bus (whenever it is connected); returns at once."""
        spool = self._uplink.spool  # raises UplinkUnavailableError before the uplink started
        self._lifecycle.begin_start()
        spool.rewind()  # continue after the committed cursor, whatever was read before
        self._drain_task = asyncio.create_task(self._drain(spool), name="publisher-drain")
        self._bus.attach(self)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Publishes what it can within ``timeout_s``, then stops.

        Records not acknowledged by then stay in the spool for the next start. The
        connection is the supervisor's, closed after this.
        """
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        reserve = min(_SHUTDOWN_RESERVE_S, timeout_s / 4)
        drain = self._drain_task
        assert drain is not None
        await asyncio.wait([drain], timeout=max(0.0, deadline - reserve - loop.time()))
        drain.cancel()
        _, stuck = await asyncio.wait([drain], timeout=max(0.05, deadline - loop.time()))
        if stuck:
            log.warning("publisher: draining did not stop in time")
        elif not drain.cancelled() and drain.exception() is not None:
            log.error("publisher: draining failed", exc_info=drain.exception())
        self._bus.detach(self)
        self._drop_link()
        self._lifecycle.finish_close()
        left = self.status.pending_records
        if left:
            log.info("publisher: closed with %d records left in the spool", left)

    # -- the bus -------------------------------------------------------------------------

    async def bus_connected(self, connection: BusConnection) -> None:
        acks = BatchAcks(connection.client, MSG_ID_HEADER)
        await acks.open()
        self._link = _Link(connection, connection.jetstream(self.ack_timeout_s), acks)
        self._links_made += 1
        self._linked.set()

    async def bus_lost(self) -> None:
        self._drop_link()

    def bus_error(self, error: Exception) -> None:
        self._last_error = f"NATS: {describe_error(error)}"  # the supervisor logs it

    def _drop_link(self) -> None:
        self._link = None
        self._linked.clear()

    def _note_error(self, message: str) -> None:
        """Keeps the last error; logs it unless the same one was logged a moment ago."""
        message = redact(message)
        self._last_error = message
        now = time.monotonic()
        if now - self._logged_at.get(message, -_REPEATED_ERROR_LOG_INTERVAL_S) < (
            _REPEATED_ERROR_LOG_INTERVAL_S
        ):
            return
        if len(self._logged_at) >= _REMEMBERED_ERRORS:
            self._logged_at.clear()
        self._logged_at[message] = now
        log.warning("publisher: %s", message)

    # -- draining ------------------------------------------------------------------------

    async def _drain(self, spool: Spool) -> None:
        acked_seq = spool.committed_seq  # acknowledged by JetStream; committed one batch late
        backoff = Backoff(max_s=self.max_backoff_s)
        try:
            while True:
                link = None
                try:
                    if not spool.has_unread:
                        await _finish_commit(_start_commit(spool, acked_seq))
                        if not await self._wait_for_records():
                            return
                        continue
                    await self._linked.wait()
                    link = self._link
                    if link is not None:
                        acked_seq = await self._publish_next_batch(spool, link, acked_seq)
                except (asyncio.CancelledError, SpoolClosedError):
                    raise
                except Exception as exc:
                    spool.rewind()
                    acked_seq = spool.committed_seq
                    self._publish_errors += 1
                    self._note_error(f"publishing a batch failed: {exc!r}")
                    connection = link.connection if link is not None else None
                    if connection is not None and (
                        isinstance(exc, PublishAckTimeoutError)
                        or not connection.client.is_connected
                    ):
                        # A silent connection is replaced, not trusted: the supervisor drops
                        # the client (and what nats-py buffered on it) and connects afresh.
                        connection.lost.set()
                    await backoff.sleep()
                else:
                    backoff.reset()
        except asyncio.CancelledError:
            _commit_now(spool, acked_seq)
            spool.rewind()
            raise
        except SpoolClosedError:
            log.warning("publisher: the spool was closed; stopping")

    async def _wait_for_records(self) -> bool:
        """True once the spool has unread records; False when closing and it has none."""
        closing_event = self._lifecycle.closing
        if closing_event.is_set():
            return False
        records = asyncio.ensure_future(self._uplink.wait_for_records())
        closing = asyncio.ensure_future(closing_event.wait())
        try:
            done, _ = await asyncio.wait([records, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            records.cancel()
            closing.cancel()
        return records in done and records.result()

    async def _publish_next_batch(self, spool: Spool, link: _Link, acked_seq: int) -> int:
        """Publishes the next batch; returns the sequence number it was acknowledged up to.

        The previous batch (acknowledged up to ``acked_seq``) is committed meanwhile, so the
        cursor's fsync overlaps this batch's round trip instead of adding to it.
        """
        if not self._stream_checked:
            await self._check_stream(link.jetstream)
        records = spool.read(max_records=self.batch)
        if not records:
            return acked_seq
        commit = _start_commit(spool, acked_seq)  # after the read: they must not overlap
        try:
            acks = await self._publish(link, records)
        finally:
            await _finish_commit(commit)
        self._published += len(acks)
        self._duplicates += sum(acks)
        return records[-1].seq

    async def _publish(self, link: _Link, records: Sequence[Record]) -> list[bool]:
        """Publishes the batch; returns per record whether JetStream had it already."""
        batch = []
        for record in records:
            event_id = self._event_id(record)
            if event_id is not None:
                batch.append(Outgoing(record.seq, event_id, record.payload))
        connection = link.connection
        if not connection.usable:
            raise PublishFailedError("the connection to NATS was lost")
        try:
            acks = await link.acks.publish(self.subject, batch, self.ack_timeout_s, connection.lost)
        except RecordsRefusedError as exc:
            if not self._quarantine(batch, exc):
                raise PublishFailedError(str(exc)) from exc
            acks = [d for n, d in enumerate(exc.duplicates) if n not in exc.refusals]
        except NoStreamError as exc:
            self._stream_checked = False  # look again: it may have been deleted
            raise PublishFailedError(str(exc)) from exc
        except AckTimeoutError as exc:
            raise PublishAckTimeoutError(str(exc)) from exc
        except AckError as exc:
            raise PublishFailedError(str(exc)) from exc
        self._refused_before.clear()
        return acks

    def _quarantine(self, batch: Sequence[Outgoing], refused: RecordsRefusedError) -> bool:
        """Moves each record JetStream refused for good (a permanent error code, or refused
        ``DEAD_LETTER_AFTER`` times running) to the dead-letter file; True when none is left
        to send again, so the batch can be committed."""
        settled = True
        for position, refusal in refused.refusals.items():
            item = batch[position]
            times = self._refused_before.get(item.token, 0) + 1
            if refusal.permanent or times >= DEAD_LETTER_AFTER:
                self._dead_letters.put(item.token, item.message_id, item.payload, str(refusal))
                self._refused_before.pop(item.token, None)
            else:
                self._refused_before[item.token] = times
                settled = False
        return settled

    def _event_id(self, record: Record) -> str | None:
        """The record's event id, or None (counted once and logged) when it is no event.

        Records were validated when the edge accepted them; a full decode is only needed to
        say what is wrong with one that no longer reads as an event."""
        found = event_id_of(record.payload)
        if found is not None:
            return found
        try:
            return decode_msgpack_event(record.payload).event_id
        except EventError as exc:
            if record.seq > self._last_skipped_seq:
                self._last_skipped_seq = record.seq
                self._skipped += 1
                log.warning("publisher: skipped spool record %d: %s", record.seq, exc)
            return None

    async def _check_stream(self, jetstream: JetStreamContext) -> None:
        """Binds to the EVENTS stream, which only central creates (with its limits and
        replicas, see :func:`central.bridge_jetstream.ensure_stream`); while it is missing
        the events stay in the spool and the publisher reports ``stream_missing``."""
        try:
            info = await jetstream.stream_info(EVENTS_STREAM)
        except NotFoundError as exc:
            if not self._stream_missing:
                log.error(
                    "publisher: JetStream has no %s stream; central creates it "
                    "(proxima central bridge): events stay in the spool until it exists",
                    EVENTS_STREAM,
                )
            self._stream_missing = True
            raise PublishFailedError(f"JetStream has no {EVENTS_STREAM} stream yet") from exc
        if self._stream_missing:
            log.info("publisher: the %s stream exists now", EVENTS_STREAM)
        self._stream_missing = False
        window = info.config.duplicate_window
        if window is not None and window < DUPLICATE_WINDOW_S:
            log.warning(
                "publisher: the %s stream dedupes for %gs only (%gs expected)",
                EVENTS_STREAM,
                window,
                DUPLICATE_WINDOW_S,
            )
        self._stream_checked = True


def _retrieve_outcome(future: asyncio.Future[Any]) -> None:
    """Marks a future's exception as seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _start_commit(spool: Spool, seq: int) -> asyncio.Future[None] | None:
    """Commits up to ``seq`` in a worker thread (it costs an fsync); None if nothing to do."""
    if seq <= spool.committed_seq:
        return None
    return asyncio.ensure_future(asyncio.to_thread(spool.commit, seq))


async def _finish_commit(commit: asyncio.Future[None] | None) -> None:
    """Waits for a commit; a cancelled caller still waits for it to end, so that nothing
    touches the reader side of the spool while it runs."""
    if commit is None:
        return
    try:
        await asyncio.shield(commit)
    except asyncio.CancelledError:
        await asyncio.wait([commit])
        _retrieve_outcome(commit)
        raise


def _commit_now(spool: Spool, seq: int) -> None:
    """The last commit of a cancelled drain: in this thread, as nothing else can wait."""
    try:
        spool.commit(seq)
    except UplinkError as exc:
        log.warning("publisher: committing the acknowledged records failed: %s", exc)
