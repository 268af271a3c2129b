"""How a ``proxima central`` command runs its roles: started in order, stopped by a signal.

SIGINT and SIGTERM set one stop event. The roles are started in the order given in a
:class:`runtime.service.ServiceStack` (a signal during a start cancels it), then the command
waits for the stop event, or for a role whose work ended by itself (its failure is raised,
so the command fails with it). Leaving closes the roles in reverse order, each draining
what it holds within what is left of one shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final

from runtime.service import Service, ServiceStack

log = logging.getLogger("proxima.central")

SHUTDOWN_TIMEOUT_S: Final = 15.0
_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

Watch = Callable[[], Awaitable[None]]
# A service, or a service and the share of the shutdown time left at its turn it may take
# (so that one slow to drain leaves time for the roles closed after it).
Served = Service | tuple[Service, float]


async def serve(
    services: Sequence[Served],
    *,
    watch: Sequence[Watch] = (),
    on_started: Callable[[], None] | None = None,
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
) -> None:
    """Runs ``services`` until SIGINT or SIGTERM, or until one of ``watch`` returns or
    raises (a role's background work ended); then closes them in reverse order."""
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        async with ServiceStack(shutdown_timeout_s) as stack:
            for served in services:
                service, share = served if isinstance(served, tuple) else (served, 1.0)
                if not await _unless_stopped(stack.start(service, share=share), stop):
                    log.info("stopped while starting")
                    return
            if on_started is not None:
                on_started()
            await _until_stopped(stop, watch)
        log.info("stopped")


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)


async def _unless_stopped(starting: Awaitable[object], stop: asyncio.Event) -> bool:
    """Awaits ``starting``; False (having cancelled it) if ``stop`` is set first."""
    start = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not start.done():
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        return False
    start.result()
    return True


async def _until_stopped(stop: asyncio.Event, watch: Sequence[Watch]) -> None:
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    waiters.extend(asyncio.ensure_future(wait()) for wait in watch)
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    for finished in done:
        finished.result()  # a role's failure ends the command with it
