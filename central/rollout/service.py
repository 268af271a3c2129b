"""The rollout controller as a service: it ticks while its one NATS connection is up.

:class:`RolloutService` keeps one connection with a :class:`~runtime.supervisor.BusSupervisor`
(named ``proxima-rollout`` by the CLI). On each new connection it makes sure the audit
stream exists, then runs :meth:`RolloutController.tick` every ``tick_s`` on that
connection until it is lost; a failed tick is logged and tried again at the next one (the
bus may be briefly away). :meth:`RolloutService.close` lets a tick under way finish within
its timeout, so a decision is not cut between the plan and the record edges watch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.monitor.store import TelemetryStore
from central.rollout.controller import RolloutController
from central.rollout.store import ensure_audit_stream
from runtime.nats import NatsSettings
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor

log = logging.getLogger("proxima.rollout")


class RolloutService(BusListener):
    """A :class:`runtime.service.Service`: :meth:`start` returns at once, ticking begins
    once connected; :meth:`close` ends it."""

    def __init__(
        self,
        nats: NatsSettings,
        telemetry: TelemetryStore,
        *,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        signer: Ed25519PrivateKey | None = None,
    ) -> None:
        self.signer = signer  # signs the edge records the controller writes
        self.telemetry = telemetry
        self.tick_s = tick_s
        self.clock = clock
        self.bus = BusSupervisor(nats)
        self.ticks = 0  # ticks done (failed ones included)
        self.last_error: str | None = None  # of the last tick, None when it worked
        self._lifecycle = Lifecycle("rollout controller")
        self._ready: BusConnection | None = None  # connected, with the audit stream
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._lifecycle.begin_start()
        self.bus.attach(self)
        await self.bus.start()
        self._task = asyncio.create_task(self._run(), name="rollout-controller")

    async def close(self, timeout_s: float = 10.0) -> None:
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._changed.set()
        task = self._task
        if task is not None:
            _, unfinished = await asyncio.wait({task}, timeout=timeout_s)
            if unfinished:
                log.warning("a rollout tick did not finish in %.1f s; cancelled", timeout_s)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.bus.close(max(0.1, deadline - loop.time()))
        self._lifecycle.finish_close()

    # -- the connection ----------------------------------------------------------------

    async def bus_connected(self, connection: BusConnection) -> None:
        await ensure_audit_stream(connection.jetstream())
        self._ready = connection
        self._changed.set()

    async def bus_lost(self) -> None:
        self._ready = None
        self._changed.set()

    # -- ticking ------------------------------------------------------------------------

    async def _run(self) -> None:
        closing = self._lifecycle.closing
        while not closing.is_set():
            self._changed.clear()
            connection = self._ready
            if connection is None or not connection.usable:
                await self._changed.wait()
                continue
            controller = RolloutController(
                connection.jetstream(), self.telemetry, clock=self.clock, signer=self.signer
            )
            log.info("rollout controller walking plans every %g s", self.tick_s)
            while connection.usable and not closing.is_set():
                await self._tick(controller)
                await _first_of(closing, connection.lost, timeout_s=self.tick_s)

    async def _tick(self, controller: RolloutController) -> None:
        try:
            await controller.tick()
            self.last_error = None
        except Exception as exc:  # the bus may be briefly away: try again next tick
            self.last_error = repr(exc)
            log.warning("rollout tick failed: %r", exc)
        self.ticks += 1


async def _first_of(*events: asyncio.Event, timeout_s: float) -> None:
    """Waits until one of ``events`` is set, at most ``timeout_s``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
