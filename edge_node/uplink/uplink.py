"""The uplink the HTTP layer hands accepted events to; the spool keeps them until published.

What a returned :meth:`Uplink.submit` guarantees, by fsync policy:

``always``
    The events are on disk: they survive the process being killed and a machine crash.
    Submits arriving while a write is under way wait for the next one, and then share one
    write and one fsync in a worker thread (group commit). At most ``max_pending_events``
    events wait for the disk at a time.
``interval``
    The events are in the OS page cache: they survive the process being killed (SIGKILL
    included). A background task fsyncs every ``fsync_interval_s``, so a machine crash loses
    at most the events of about the last interval.
``never``
    As ``interval`` without the task: the kernel writes back when it chooses (about 30 s on
    Linux); a finished segment is flushed when it is rolled, and everything on close.

Under every policy, a submit that raises has not been acknowledged and the client should send
the events again; nothing is dropped silently. A submit that fails after its events reached
the spool (a failed fsync) may see them published anyway: delivery is at-least-once and the
bus dedupes by event id.

The publisher reads the spool through :attr:`Uplink.spool` (``read``/``commit``) and waits for
new records with :meth:`Uplink.wait_for_records`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from edge_node.uplink.errors import (
    RecordTooLargeError,
    SpoolFullError,
    UplinkError,
    UplinkOverloadedError,
    UplinkUnavailableError,
)
from edge_node.uplink.spool import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SEGMENT_BYTES,
    MAX_RECORD_BYTES,
    Spool,
    frames_size,
)
from runtime.service import Lifecycle

log = logging.getLogger("proxima.edge.uplink")

FsyncPolicy = Literal["always", "interval", "never"]
UNAVAILABLE_RETRY_AFTER_S = 1.0
FAULT_RETRY_AFTER_S = 5.0  # a disk that failed comes back in seconds at best


class SpoolSettings(Protocol):
    """The settings :meth:`Uplink.from_settings` reads (``edge_node.config.EdgeSettings``)."""

    @property
    def spool_dir(self) -> Path: ...
    @property
    def spool_fsync(self) -> FsyncPolicy: ...
    @property
    def spool_fsync_interval_s(self) -> float: ...
    @property
    def uplink_max_pending_events(self) -> int: ...
    @property
    def spool_max_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    directory: Path
    fsync: FsyncPolicy = "always"
    fsync_interval_s: float = 0.05
    max_pending_events: int = 10_000
    max_bytes: int = DEFAULT_MAX_BYTES
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    overloaded_retry_after_s: float = 1.0
    spool_full_retry_after_s: float = 30.0
    recover_every_s: float = 1.0  # how often a full fsync is tried after a failure


@dataclass(slots=True)
class UplinkCounters:
    events_submitted: int = 0
    bytes_submitted: int = 0  # payload bytes of the events submitted
    overload_rejections: int = 0
    fsyncs: int = 0
    fsync_seconds_total: float = 0.0
    io_errors: int = 0  # writes and fsyncs that failed
    records_suspect: int = 0  # records written before a failed fsync: perhaps lost


@dataclass(eq=False, slots=True)
class _Submit:
    records: Sequence[bytes]
    size: int
    done: asyncio.Future[None]


class Uplink:
    def __init__(self, config: UplinkConfig) -> None:
        self.config = config
        self.counters = UplinkCounters()
        self._spool: Spool | None = None
        self._lifecycle = Lifecycle("the uplink")
        self._queue: deque[_Submit] = deque()
        self._waiting_events = 0  # queued or being written, for "always"
        self._waiting_bytes = 0
        self._wakeup = asyncio.Event()
        self._appended = asyncio.Event()
        self._closing = self._lifecycle.closing
        self._unsynced = False
        self._tasks: list[asyncio.Task[None]] = []
        # Why the spool cannot be trusted to keep what it is given (a write or an fsync
        # failed): new events are refused and the edge is not ready until a full fsync
        # succeeds again. None while all is well.
        self.fault: str | None = None

    @classmethod
    def from_settings(cls, settings: SpoolSettings) -> Uplink:
        return cls(
            UplinkConfig(
                directory=settings.spool_dir,
                fsync=settings.spool_fsync,
                fsync_interval_s=settings.spool_fsync_interval_s,
                max_pending_events=settings.uplink_max_pending_events,
                max_bytes=settings.spool_max_bytes,
            )
        )

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            raise UplinkUnavailableError(
                "the uplink was not started", retry_after_s=UNAVAILABLE_RETRY_AFTER_S
            )
        return self._spool

    @property
    def waiting_events(self) -> int:
        """Events submitted under ``always`` that are not on disk yet."""
        return self._waiting_events

    async def start(self) -> None:
        """Opens the spool (recovering it after a crash) and starts the background task."""
        self._lifecycle.begin_start()
        config = self.config
        try:
            spool = await asyncio.to_thread(
                Spool,
                config.directory,
                segment_bytes=config.segment_bytes,
                max_bytes=config.max_bytes,
            )
        except BaseException:
            self._lifecycle.start_failed()
            raise
        if not self._lifecycle.running:  # closed while the spool was opening
            spool.close()
            return
        self._spool = spool
        self._tasks.append(asyncio.create_task(self._recover_periodically(), name="uplink-heal"))
        if config.fsync == "always":
            self._tasks.append(asyncio.create_task(self._write_groups(), name="uplink-writer"))
        elif config.fsync == "interval":
            self._tasks.append(asyncio.create_task(self._sync_periodically(), name="uplink-fsync"))

    async def submit(self, encoded_events: Sequence[bytes]) -> None:
        """Returns once the events are in the spool as the fsync policy promises."""
        if not self._lifecycle.running or self._spool is None:
            raise UplinkUnavailableError(
                f"the uplink is {self._state_name}", retry_after_s=UNAVAILABLE_RETRY_AFTER_S
            )
        if not encoded_events:
            return
        if self.fault is not None:
            raise UplinkUnavailableError(
                "the event spool cannot write to its disk", retry_after_s=FAULT_RETRY_AFTER_S
            )
        if max(len(event) for event in encoded_events) > MAX_RECORD_BYTES:
            raise RecordTooLargeError(f"an event record is at most {MAX_RECORD_BYTES} bytes")
        if self.config.fsync == "always":
            await self._submit_to_group(encoded_events)
        else:
            self._append_now(encoded_events)
        self.counters.events_submitted += len(encoded_events)
        self.counters.bytes_submitted += sum(len(event) for event in encoded_events)

    async def wait_for_records(self) -> bool:
        """Waits until the spool has records not read yet; False once the uplink is closing."""
        spool = self.spool
        while not spool.has_unread:
            if not self._lifecycle.running:
                return False
            self._appended.clear()
            await self._appended.wait()
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Writes what is waiting (for at most ``timeout_s``), fsyncs and closes the spool.

        Submits still queued when the time is up fail with :class:`UplinkUnavailableError`;
        a write already under way is always finished.
        """
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        if self._spool is None:  # closed while starting: the spool never opened
            self._lifecycle.finish_close()
            return
        self._wakeup.set()
        self._appended.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout_s)
            if late:
                self._abandon_queue()
                await asyncio.wait(late)
        spool = self.spool
        try:
            await self._fsync()
        finally:
            spool.close()
            self._lifecycle.finish_close()

    @property
    def _state_name(self) -> str:
        # "starting" while the spool opens: running to the lifecycle, not yet to submits
        state = self._lifecycle.state
        return "starting" if state == "running" and self._spool is None else state

    async def __aenter__(self) -> Uplink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- always: group commit ------------------------------------------------------------

    async def _submit_to_group(self, records: Sequence[bytes]) -> None:
        config = self.config
        count, size = len(records), frames_size(records)
        if self._waiting_events and self._waiting_events + count > config.max_pending_events:
            raise self._overloaded(
                f"{self._waiting_events} events are waiting for the disk",
                config.overloaded_retry_after_s,
            )
        if self._waiting_bytes + size > self.spool.free_bytes:
            raise self._overloaded("the event spool is full", config.spool_full_retry_after_s)
        submit = _Submit(records, size, asyncio.get_running_loop().create_future())
        self._queue.append(submit)
        self._waiting_events += count
        self._waiting_bytes += size
        self._wakeup.set()
        await submit.done

    async def _write_groups(self) -> None:
        while self._queue or not self._closing.is_set():
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = list(self._queue)
            self._queue.clear()
            try:
                await self._write_group(group)
            finally:
                self._waiting_events -= sum(len(submit.records) for submit in group)
                self._waiting_bytes -= sum(submit.size for submit in group)
                self._appended.set()

    async def _write_group(self, group: list[_Submit]) -> None:
        records = [record for submit in group for record in submit.records]
        try:
            seconds = await asyncio.to_thread(self._append_and_sync, records)
        except SpoolFullError:
            _fail(group, lambda: self._overloaded(
                "the event spool is full", self.config.spool_full_retry_after_s
            ))
        except Exception as exc:
            self._enter_fault(exc, f"writing {len(records)} events")
            _fail(group, lambda: UplinkUnavailableError(
                "the event spool cannot write to its disk", retry_after_s=FAULT_RETRY_AFTER_S
            ))
        else:
            self._count_fsync(seconds)
            for submit in group:
                if not submit.done.done():
                    submit.done.set_result(None)

    def _append_and_sync(self, records: list[bytes]) -> float:
        spool = self.spool
        spool.append(records)
        started = time.perf_counter()
        spool.fsync()
        return time.perf_counter() - started

    def _abandon_queue(self) -> None:
        group = list(self._queue)
        self._queue.clear()
        self._waiting_events -= sum(len(submit.records) for submit in group)
        self._waiting_bytes -= sum(submit.size for submit in group)
        if group:
            log.warning("uplink: closed before %d submits were written", len(group))
        _fail(group, lambda: UplinkUnavailableError(
            "the uplink closed before the events were written",
            retry_after_s=UNAVAILABLE_RETRY_AFTER_S,
        ))

    # -- interval and never: append now --------------------------------------------------

    def _append_now(self, records: Sequence[bytes]) -> None:
        try:
            self.spool.append(records)
        except SpoolFullError as exc:
            raise self._overloaded(
                "the event spool is full", self.config.spool_full_retry_after_s
            ) from exc
        except UplinkError as exc:
            self._enter_fault(exc, f"writing {len(records)} events")
            raise UplinkUnavailableError(
                "the event spool cannot write to its disk", retry_after_s=FAULT_RETRY_AFTER_S
            ) from exc
        self._unsynced = True
        self._appended.set()

    async def _sync_periodically(self) -> None:
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), self.config.fsync_interval_s)
            except TimeoutError:
                if self._unsynced and self.fault is None:
                    await self._fsync()

    async def _fsync(self) -> None:
        """One fsync in a worker thread; failures are counted and logged, not raised."""
        self._unsynced = False
        try:
            seconds = await asyncio.to_thread(self._timed_fsync)
        except UplinkError as exc:
            self._unsynced = True
            self._enter_fault(exc, "the interval fsync")
        else:
            self._count_fsync(seconds)

    # -- faults --------------------------------------------------------------------------

    def _enter_fault(self, exc: Exception, doing: str) -> None:
        """Counts a write or fsync failure; logs it once an episode, with path and errno."""
        self.counters.io_errors += 1
        if self.fault is not None:
            return
        path = getattr(exc, "path", "") or str(self.config.directory)
        errno_ = getattr(exc, "errno", None)
        self.fault = f"{doing} failed: {exc}"
        log.error(
            "uplink: %s failed on %s (errno %s %s): %s; new events are refused and the edge "
            "is not ready until a full fsync succeeds",
            doing, path, errno_, errno.errorcode.get(errno_ or 0, ""), exc,
        )  # fmt: skip

    async def _recover_periodically(self) -> None:
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), self.config.recover_every_s)
            except TimeoutError:
                if self.fault is not None:
                    await self._try_recover()

    async def _try_recover(self) -> None:
        """A full fsync (of a fresh segment if the last fsync failed); clears the fault."""
        spool = self.spool
        try:
            lost = await asyncio.to_thread(spool.resync)
        except UplinkError:
            self.counters.io_errors += 1
            return
        if lost is not None:
            self.counters.records_suspect += lost[1] - lost[0] + 1
            log.error(
                "uplink: the spool writes again in a fresh segment; records %d-%d were "
                "written before a failed fsync and may have been lost",
                *lost,
            )
        else:
            log.warning("uplink: the spool writes again: a full fsync succeeded")
        self.fault = None
        self._unsynced = False

    def _timed_fsync(self) -> float:
        started = time.perf_counter()
        self.spool.fsync()
        return time.perf_counter() - started

    # -- shared --------------------------------------------------------------------------

    def _count_fsync(self, seconds: float) -> None:
        self.counters.fsyncs += 1
        self.counters.fsync_seconds_total += seconds

    def _overloaded(self, reason: str, retry_after_s: float) -> UplinkOverloadedError:
        self.counters.overload_rejections += 1
        return UplinkOverloadedError(reason, retry_after_s=retry_after_s)


def _fail(group: list[_Submit], error: Callable[[], UplinkError]) -> None:
    for submit in group:
        if not submit.done.done():
            submit.done.set_exception(error())
