"""The one service lifecycle: ``start()``, then ``close(timeout_s)``.

A :class:`Service` starts its background work in ``start`` and returns; ``close`` stops it,
draining what it can within ``timeout_s`` (uvicorn's model of a graceful shutdown) and
releasing what it holds. Services compose with :func:`started`, which enters them into a
:class:`contextlib.AsyncExitStack` so they are closed in the reverse order, each with the
share of the time left that the stack grants it, also when a later start fails.

:class:`Lifecycle` is the state machine every service keeps (new → running → closing →
closed) with the errors for starting twice or using a closed service.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from typing import Literal, Protocol, TypeVar, runtime_checkable

from protocol.errors import ProximaError

State = Literal["new", "running", "closing", "closed"]


class ServiceStateError(ProximaError):
    code = "service_state"
    status = 503


@runtime_checkable
class Service(Protocol):
    async def start(self) -> None: ...

    async def close(self, timeout_s: float = 10.0) -> None: ...


S = TypeVar("S", bound=Service)


class Lifecycle:
    """new → running → closing → closed, with one event per transition that matters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state: State = "new"
        self.closing = asyncio.Event()
        self.closed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def begin_start(self) -> None:
        if self.state != "new":
            raise ServiceStateError(f"{self.name} starts once (it is {self.state})")
        self.state = "running"

    def start_failed(self) -> None:
        """``start`` raised after :meth:`begin_start`: nothing runs, and nothing is to close."""
        self.state = "closed"
        self.closing.set()
        self.closed.set()

    def begin_close(self) -> bool:
        """True if the caller must do the closing; False if it is done or under way."""
        if self.state in ("closing", "closed"):
            return False
        if self.state == "new":
            self.state = "closed"
            self.closing.set()
            self.closed.set()
            return False
        self.state = "closing"
        self.closing.set()
        return True

    def finish_close(self) -> None:
        self.state = "closed"
        self.closed.set()

    def require_running(self) -> None:
        if self.state != "running":
            raise ServiceStateError(f"{self.name} is {self.state}, not running")


class LoopService:
    """A service whose work is one background coroutine, :meth:`_run`, cancelled on close
    (for loops that hold nothing to drain: a periodic job that starts again from its source)."""

    name = "service"

    def __init__(self) -> None:
        self._lifecycle = Lifecycle(self.name)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._lifecycle.begin_start()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self, timeout_s: float = 10.0) -> None:
        if not self._lifecycle.begin_close():
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._lifecycle.finish_close()


class Deadline:
    """The time left of one shutdown, shared out among the services that close in it."""

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._end = self._loop.time() + timeout_s

    def left(self, minimum_s: float = 0.05) -> float:
        return max(minimum_s, self._end - self._loop.time())


class ServiceStack:
    """Starts services in order and closes them in reverse within one shutdown timeout.

    ``async with ServiceStack(timeout_s) as stack: await stack.start(a); await stack.start(b)``
    — on leaving, ``b`` then ``a`` are closed, each given what is left of ``timeout_s``.
    """

    def __init__(self, shutdown_timeout_s: float = 10.0) -> None:
        self.shutdown_timeout_s = shutdown_timeout_s
        self._stack = AsyncExitStack()
        self._deadline: Deadline | None = None

    async def start(self, service: S, *, share: float = 1.0) -> S:
        """Starts ``service``; it is closed with ``share`` of the time left at its turn."""
        await service.start()

        async def close() -> None:
            await service.close(self._time_left() * share)

        self._stack.push_async_callback(close)
        return service

    def push_close(self, close: ServiceCloser) -> None:
        """Something that is not a service but must be released in this order (a client)."""
        self._stack.push_async_callback(close)

    def _time_left(self) -> float:
        if self._deadline is None:
            self._deadline = Deadline(self.shutdown_timeout_s)
        return self._deadline.left()

    async def __aenter__(self) -> ServiceStack:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> bool:
        self._deadline = Deadline(self.shutdown_timeout_s)
        return bool(await self._stack.__aexit__(*exc_info))  # type: ignore[arg-type]


class ServiceCloser(Protocol):
    async def __call__(self) -> None: ...
