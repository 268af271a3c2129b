"""The edge's event publisher: drains the on-disk spool into the JetStream ``EVENTS`` stream.

Records are read from the spool in order, up to ``batch`` at a time, and published to
``events.<region>.<node>`` with ``Nats-Msg-Id: <event_id>``, all of a batch in flight at once.
Once JetStream has acknowledged every record of a batch, the spool is committed up to its
last record (one fsync per batch, overlapping the next batch's round trip). Any failure
rewinds the spool to the committed cursor and the batch is sent again after a capped,
jittered backoff: delivery is at-least-once, and JetStream's duplicate window (by
``Nats-Msg-Id``) drops the records sent twice.

Records go out in spool order, and JetStream stores them in that order when a server dies
or a connection drops: a lost connection is replaced rather than resumed (see
:meth:`EventPublisher._stay_connected`), so nothing of a failed attempt is replayed ahead of
the batch sent again; the records that got through the first time are dropped as duplicates
and the rest follow in order. Two cases can still store records out of order: a server that
stalled (an ack timeout also replaces the connection) and then reads the old connection's
last bytes while the new one sends, and a JetStream that refuses single records of a batch
while taking later ones. Consumers dedupe by ``event_id`` and order by the events' times.

A record that is not a valid event is logged, counted and committed with its batch: one bad
record never blocks the spool.

The publisher connects in the background: an edge starts and accepts events while NATS is
down, and they wait in the spool until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from edge_node.uplink.acks import AckError, AckTimeoutError, BatchAcks, NoStreamError, Outgoing
from edge_node.uplink.errors import SpoolClosedError, UplinkError
from edge_node.uplink.spool import Record, Spool
from edge_node.uplink.uplink import Uplink
from protocol.codec import decode_msgpack_event, event_id_of
from protocol.errors import EventError
from protocol.subjects import (
    DUPLICATE_WINDOW_S,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    MSG_ID_HEADER,
    events_subject,
)
from runtime.nats import NatsSettings

log = logging.getLogger("proxima.edge.publisher")

# Of close()'s timeout, this much (at most a quarter of it) is kept for closing the connection.
_SHUTDOWN_RESERVE_S: Final = 0.5
_REPEATED_ERROR_LOG_INTERVAL_S: Final = 30.0
_REMEMBERED_ERRORS: Final = 64
# A connection that lasted this long resets the reconnect backoff.
_STABLE_CONNECTION_S: Final = 10.0
_CONNECTION_CHECK_S: Final = 0.5


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
    last_error: str | None
    lag_s: float  # age of the oldest record not committed yet
    pending_records: int
    pending_bytes: int
    reconnects: int


class Backoff:
    """Capped exponential backoff with equal jitter: each delay is in [d/2, d]."""

    def __init__(self, initial_s: float = 0.05, max_s: float = 5.0) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self._next_s = initial_s

    def next_delay(self) -> float:
        ceiling = self._next_s
        self._next_s = min(self.max_s, self._next_s * 2)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._next_s = self.initial_s


@dataclass(eq=False, slots=True)
class _Connection:
    """One NATS connection; ``lost`` is set once it is closed or found broken."""

    client: NatsClient
    jetstream: JetStreamContext
    acks: BatchAcks
    lost: asyncio.Event

    @property
    def usable(self) -> bool:
        return not self.lost.is_set() and self.client.is_connected

    async def wait_until_lost(self) -> None:
        # nats-py can close a connection without calling back (when flushing into the dead
        # socket raises), so its state is also looked at now and then.
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            while self.usable:
                await asyncio.wait([lost], timeout=_CONNECTION_CHECK_S)
        finally:
            lost.cancel()
        self.lost.set()


class EventPublisher:
    def __init__(
        self,
        uplink: Uplink,
        nats: NatsSettings,
        *,
        region: str,
        node: str,
        batch: int = 256,
        ensure_stream: bool = True,
        ack_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        if batch < 1 or ack_timeout_s <= 0:
            raise ValueError("batch must be at least 1 and ack_timeout_s positive")
        self._uplink = uplink
        self._nats = nats
        self.subject = events_subject(region, node)
        self.batch = batch
        self.ensure_stream = ensure_stream
        self.ack_timeout_s = ack_timeout_s
        self.max_backoff_s = max_backoff_s
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._connection: _Connection | None = None
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._stream_checked = not ensure_stream
        self._tasks: list[asyncio.Task[None]] = []
        self._published = 0
        self._duplicates = 0
        self._skipped = 0
        self._last_skipped_seq = 0
        self._publish_errors = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._logged_at: dict[str, float] = {}  # error message -> when it was last logged

    @property
    def status(self) -> PublisherStatus:
        try:
            spool: Spool | None = self._uplink.spool
        except UplinkError:
            spool = None
        return PublisherStatus(
            connected=self._connection is not None and self._connection.usable,
            published=self._published,
            duplicates=self._duplicates,
            skipped_records=self._skipped,
            publish_errors=self._publish_errors,
            last_error=self._last_error,
            lag_s=spool.oldest_pending_age_s if spool is not None else 0.0,
            pending_records=spool.pending_records if spool is not None else 0,
            pending_bytes=spool.pending_bytes if spool is not None else 0,
            reconnects=self._reconnects,
        )

    async def start(self) -> None:
        """Starts connecting (in the background) and draining the spool; returns at once."""
        if self._state != "new":
            raise PublisherError("a publisher starts once")
        spool = self._uplink.spool  # raises UplinkUnavailableError before the uplink started
        spool.rewind()  # continue after the committed cursor, whatever was read before
        self._state = "running"
        self._tasks = [
            asyncio.create_task(self._stay_connected(), name="publisher-connection"),
            asyncio.create_task(self._drain(spool), name="publisher-drain"),
        ]

    async def close(self, timeout_s: float = 10.0) -> None:
        """Publishes what it can within ``timeout_s``, then stops and closes the connection.

        Records not acknowledged by then stay in the spool for the next start.
        """
        if self._state == "closing":
            await self._closed.wait()
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closing"
        self._closing.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        reserve = min(_SHUTDOWN_RESERVE_S, timeout_s / 4)
        connect_task, drain_task = self._tasks
        await asyncio.wait([drain_task], timeout=max(0.0, deadline - reserve - loop.time()))
        for task in (drain_task, connect_task):
            task.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=max(0.05, deadline - loop.time()))
        for task in self._tasks:
            if task in stuck:
                log.warning("publisher: %s did not stop in time", task.get_name())
            elif not task.cancelled() and task.exception() is not None:
                log.error("publisher: %s failed", task.get_name(), exc_info=task.exception())
        await self._close_connection(max(0.05, deadline - loop.time()))
        self._state = "closed"
        self._closed.set()
        left = self.status.pending_records
        if left:
            log.info("publisher: closed with %d records left in the spool", left)

    # -- connection ----------------------------------------------------------------------

    async def _stay_connected(self) -> None:
        """Connects, and after a lost connection connects afresh, until cancelled.

        nats-py's own reconnecting is turned off: it would replay, on the new connection, the
        publishes it buffered for the old one, landing them before the batch the drain loop
        sends again. Dropping the client drops that buffer; the spool is the only buffer.
        nats-py still retries unreachable servers inside ``connect`` (every
        ``reconnect_wait_s``); what escapes it (a refused login, say) is retried here.
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff(max_s=self.max_backoff_s)
        options = {**self._nats.connect_options(), "allow_reconnect": False}
        ever_connected = False
        while True:
            try:
                connection = await self._open_connection(options)
            except Exception as exc:
                self._note_error(f"connecting to NATS failed: {exc!r}")
                await asyncio.sleep(backoff.next_delay())
                continue
            if self._closing.is_set():  # nats-py can swallow a cancellation while connecting
                await self._close_client(connection.client, self.ack_timeout_s)
                return
            connected_at = loop.time()
            self._use(connection)
            if ever_connected:
                self._reconnects += 1
            ever_connected = True
            await connection.wait_until_lost()
            self._drop(connection)
            await self._close_client(connection.client, self.ack_timeout_s)
            if loop.time() - connected_at >= _STABLE_CONNECTION_S:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _open_connection(self, options: dict[str, Any]) -> _Connection:
        client = NatsClient()
        lost = asyncio.Event()

        async def on_lost() -> None:
            lost.set()

        try:
            await client.connect(
                **options, error_cb=self._on_error, disconnected_cb=on_lost, closed_cb=on_lost
            )
        except BaseException:
            await client.close()
            raise
        acks = BatchAcks(client, MSG_ID_HEADER)
        try:
            await acks.open()
        except BaseException:
            await client.close()
            raise
        return _Connection(client, client.jetstream(timeout=self.ack_timeout_s), acks, lost)

    def _use(self, connection: _Connection) -> None:
        self._connection = connection
        self._connected.set()
        url = connection.client.connected_url
        log.info("publisher: connected to %s", url.netloc if url is not None else "NATS")

    def _drop(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None
            self._connected.clear()
        if not self._closing.is_set():
            log.warning("publisher: lost the connection to NATS; connecting again")

    async def _close_connection(self, timeout_s: float) -> None:
        connection, self._connection = self._connection, None
        self._connected.clear()
        if connection is not None:
            await self._close_client(connection.client, timeout_s)

    @staticmethod
    async def _close_client(client: NatsClient, timeout_s: float) -> None:
        # Bounded: closing flushes what nats-py still holds, which waits on a stalled server.
        try:
            await asyncio.wait_for(client.close(), timeout_s)
        except Exception as exc:
            log.warning("publisher: closing the NATS connection failed: %r", exc)

    async def _on_error(self, exc: Exception) -> None:
        self._note_error(f"NATS: {exc!r}")

    def _note_error(self, message: str) -> None:
        """Keeps the last error; logs it unless the same one was logged a moment ago."""
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
                connection = None
                try:
                    if not spool.has_unread:
                        await _finish_commit(_start_commit(spool, acked_seq))
                        if not await self._wait_for_records():
                            return
                        continue
                    await self._connected.wait()
                    connection = self._connection
                    if connection is not None:
                        acked_seq = await self._publish_next_batch(spool, connection, acked_seq)
                except (asyncio.CancelledError, SpoolClosedError):
                    raise
                except Exception as exc:
                    spool.rewind()
                    acked_seq = spool.committed_seq
                    self._publish_errors += 1
                    self._note_error(f"publishing a batch failed: {exc!r}")
                    if connection is not None and (
                        isinstance(exc, PublishAckTimeoutError)
                        or not connection.client.is_connected
                    ):
                        connection.lost.set()  # a silent connection is replaced, not trusted
                    await asyncio.sleep(backoff.next_delay())
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
        if self._closing.is_set():
            return False
        records = asyncio.ensure_future(self._uplink.wait_for_records())
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            done, _ = await asyncio.wait([records, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            records.cancel()
            closing.cancel()
        return records in done and records.result()

    async def _publish_next_batch(
        self, spool: Spool, connection: _Connection, acked_seq: int
    ) -> int:
        """Publishes the next batch; returns the sequence number it was acknowledged up to.

        The previous batch (acknowledged up to ``acked_seq``) is committed meanwhile, so the
        cursor's fsync overlaps this batch's round trip instead of adding to it.
        """
        if not self._stream_checked:
            await self._ensure_stream(connection.jetstream)
        records = spool.read(max_records=self.batch)
        if not records:
            return acked_seq
        commit = _start_commit(spool, acked_seq)  # after the read: they must not overlap
        try:
            acks = await self._publish(connection, records)
        finally:
            await _finish_commit(commit)
        self._published += len(acks)
        self._duplicates += sum(acks)
        return records[-1].seq

    async def _publish(self, connection: _Connection, records: Sequence[Record]) -> list[bool]:
        """Publishes the batch; returns per record whether JetStream had it already."""
        batch = []
        for record in records:
            event_id = self._event_id(record)
            if event_id is not None:
                batch.append(Outgoing(record.seq, event_id, record.payload))
        if not connection.usable:
            raise PublishFailedError("the connection to NATS was lost")
        try:
            return await connection.acks.publish(
                self.subject, batch, self.ack_timeout_s, connection.lost
            )
        except NoStreamError as exc:
            self._stream_checked = not self.ensure_stream  # the stream may have to be made again
            raise PublishFailedError(str(exc)) from exc
        except AckTimeoutError as exc:
            raise PublishAckTimeoutError(str(exc)) from exc
        except AckError as exc:
            raise PublishFailedError(str(exc)) from exc

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

    async def _ensure_stream(self, jetstream: JetStreamContext) -> None:
        """Adds the EVENTS stream if it is missing; an existing one is central's, left as is."""
        try:
            info = await jetstream.stream_info(EVENTS_STREAM)
        except NotFoundError:
            config = StreamConfig(
                name=EVENTS_STREAM,
                subjects=[EVENTS_SUBJECTS],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
            try:
                await jetstream.add_stream(config)
            except APIError as exc:  # made meanwhile by someone else, or clashing subjects
                log.warning("publisher: could not add the %s stream: %s", EVENTS_STREAM, exc)
            else:
                log.info("publisher: added the %s stream", EVENTS_STREAM)
        else:
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
