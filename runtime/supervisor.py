"""The process's one NATS connection, and who to tell when it comes and goes.

A :class:`BusSupervisor` owns the single nats-py client of a process (an edge, a central
role). It connects with the one :class:`~runtime.backoff.Backoff`, and when a connection
is lost it drops the client and connects afresh. nats-py's own reconnecting is off on
purpose: it would replay, on the new connection, what it buffered for the old one, landing
an edge's publishes before the batch its publisher sends again; a dropped client drops that
buffer, and each component's own state (the spool, a watch) is the only buffer.

Components that use the bus are :class:`BusListener` s, attached once. On every new
connection the supervisor calls ``bus_connected(connection)``: the listener subscribes,
opens its watch or its acknowledgement inbox there. When the connection is lost it calls
``bus_lost()``: the listener forgets what it held on it. A listener whose
``bus_connected`` fails is asked again, with its own backoff, while the connection lives;
the other listeners keep the connection. A listener that finds the connection silent (an
edge publisher whose acknowledgements do not come) sets ``connection.lost``: the supervisor
then drops that client and connects afresh, as for any lost connection. Errors nats-py
reports (a slow consumer, a refused publish, a failed connect) reach every listener's
``bus_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.service import Lifecycle

log = logging.getLogger("proxima.bus")

_CONNECTION_CHECK_S: Final = 0.5
_REPEATED_ERROR_LOG_INTERVAL_S: Final = 30.0
_CREDENTIALS: Final = re.compile(r"([a-z]+://)[^@/\s]+@")


class BusConnection:
    """One live connection; ``lost`` is set once it is closed or found broken."""

    def __init__(self, client: NatsClient, generation: int) -> None:
        self.client = client
        self.generation = generation  # 1 for the first connection of the process, then 2 ...
        self.lost = asyncio.Event()

    @property
    def usable(self) -> bool:
        return not self.lost.is_set() and self.client.is_connected

    def jetstream(self, timeout_s: float = 5.0) -> JetStreamContext:
        return self.client.jetstream(timeout=timeout_s)

    async def wait_until_lost(self) -> None:
        # nats-py can close a connection without calling back (when flushing into a dead
        # socket raises), so its state is also looked at now and then.
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            while self.usable:
                await asyncio.wait([lost], timeout=_CONNECTION_CHECK_S)
        finally:
            lost.cancel()
        self.lost.set()


class BusListener:
    """What a component that uses the bus implements; every method is optional."""

    async def bus_connected(self, connection: BusConnection) -> None:
        """Subscribe, watch, open inboxes on ``connection``. Raise to be asked again later."""

    async def bus_lost(self) -> None:
        """The connection is gone: drop what was held on it."""

    def bus_error(self, error: Exception) -> None:
        """An asynchronous error nats-py reported on the live connection."""


@dataclass(frozen=True, slots=True)
class BusStatus:
    connected: bool
    server: str | None  # host:port of the server connected to, never with credentials
    connections: int  # connections made since start
    last_error: str | None


class BusSupervisor:
    """``start()`` connects in the background and returns; ``close(timeout_s)`` ends it."""

    def __init__(
        self,
        settings: NatsSettings,
        *,
        ping_interval_s: int = 10,
        backoff: Backoff | None = None,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.ping_interval_s = ping_interval_s
        self.close_timeout_s = close_timeout_s
        self._backoff = backoff or Backoff(0.2, 5.0, stable_after_s=10.0)
        self._listeners: list[BusListener] = []
        self._lifecycle = Lifecycle(f"NATS connection {settings.name}")
        self._connection: BusConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # bus_connected calls of the live connection, cancelled when it is lost
        self._telling: set[asyncio.Task[None]] = set()
        self._client_close_timeout_s = close_timeout_s
        self._generation = 0
        self._last_error: str | None = None
        self._logged_at: dict[str, float] = {}

    # -- what components use ------------------------------------------------------------

    def attach(self, listener: BusListener) -> None:
        """Adds a listener; attached while connected, it is told of the live connection."""
        self._listeners.append(listener)
        connection = self._connection
        if connection is not None and connection.usable:
            self._tell(listener, connection)

    def detach(self, listener: BusListener) -> None:
        """Removes a listener (a component that closed); it is told of nothing more."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    @property
    def connection(self) -> BusConnection | None:
        connection = self._connection
        return connection if connection is not None and connection.usable else None

    async def wait_connected(self, timeout_s: float | None = None) -> BusConnection:
        """The live connection, waiting up to ``timeout_s`` for one (TimeoutError after)."""
        async with asyncio.timeout(timeout_s):
            while True:
                connection = self.connection
                if connection is not None:
                    return connection
                self._connected.clear()
                await self._connected.wait()

    @property
    def status(self) -> BusStatus:
        connection = self.connection
        server = None
        if connection is not None and connection.client.connected_url is not None:
            url = connection.client.connected_url
            server = f"{url.hostname}:{url.port}"
        return BusStatus(connection is not None, server, self._generation, self._last_error)

    # -- the service ----------------------------------------------------------------------

    async def start(self) -> None:
        self._lifecycle.begin_start()
        self._task = asyncio.create_task(self._stay_connected(), name=f"bus-{self.settings.name}")

    async def close(self, timeout_s: float | None = None) -> None:
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        timeout_s = self.close_timeout_s if timeout_s is None else timeout_s
        self._client_close_timeout_s = timeout_s
        if self._task is not None:
            self._task.cancel()  # the loop tells the listeners and closes the client
            await asyncio.gather(self._task, return_exceptions=True)
        self._lifecycle.finish_close()

    # -- the loop -----------------------------------------------------------------------

    async def _stay_connected(self) -> None:
        while True:
            try:
                connection = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_error(f"connecting to NATS failed: {describe_error(exc)}")
                await self._backoff.sleep()
                continue
            if not self._lifecycle.running:  # nats-py can swallow a cancellation in connect
                await _close_client(connection.client, self._client_close_timeout_s)
                return
            self._backoff.succeeded()
            self._connection = connection
            self._connected.set()
            log.info("connected to NATS at %s (%s)", self.status.server, self.settings.name)
            for listener in list(self._listeners):
                self._tell(listener, connection)
            try:
                await connection.wait_until_lost()
            finally:
                await self._drop(connection)
            self._backoff.lost()
            log.warning("lost the NATS connection (%s); connecting again", self.settings.name)
            await self._backoff.sleep()

    async def _connect(self) -> BusConnection:
        client = NatsClient()
        connection = BusConnection(client, self._generation + 1)

        async def on_lost() -> None:
            connection.lost.set()

        async def on_error(error: Exception) -> None:
            self._note_error(f"NATS: {describe_error(error)}", quiet=True)
            for listener in list(self._listeners):
                try:
                    listener.bus_error(error)
                except Exception:
                    log.exception("a bus listener failed on an error report")

        options: dict[str, Any] = self.settings.connect_options()
        options.update(
            allow_reconnect=False,
            max_reconnect_attempts=1,
            ping_interval=self.ping_interval_s,
            closed_cb=on_lost,
            disconnected_cb=on_lost,
            error_cb=on_error,
        )
        try:
            await client.connect(**options)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        self._generation = connection.generation
        return connection

    async def _drop(self, connection: BusConnection) -> None:
        """Tells everyone the connection is gone, then closes its client (also if cancelled)."""
        connection.lost.set()  # also when closing: whoever waits on it stops
        self._connection = None
        telling, self._telling = self._telling, set()
        for task in telling:
            task.cancel()
        try:
            await asyncio.gather(*telling, return_exceptions=True)
            await self._tell_lost()
        finally:
            await _close_client(connection.client, self._client_close_timeout_s)

    def _tell(self, listener: BusListener, connection: BusConnection) -> None:
        task = asyncio.create_task(self._tell_connected(listener, connection))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _tell_connected(self, listener: BusListener, connection: BusConnection) -> None:
        backoff = Backoff(self._backoff.initial_s, self._backoff.max_s)
        while connection.usable:
            try:
                await listener.bus_connected(connection)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                name = type(listener).__name__
                self._note_error(f"{name} could not use the connection: {describe_error(exc)}")
            await backoff.sleep(connection.lost)

    async def _tell_lost(self) -> None:
        for listener in list(self._listeners):
            try:
                await listener.bus_lost()
            except Exception:
                log.exception("%s failed on a lost connection", type(listener).__name__)

    def _note_error(self, message: str, *, quiet: bool = False) -> None:
        """Keeps the last error; logs it unless the same one was logged a moment ago."""
        self._last_error = message
        now = time.monotonic()
        if now - self._logged_at.get(message, -_REPEATED_ERROR_LOG_INTERVAL_S) < (
            _REPEATED_ERROR_LOG_INTERVAL_S
        ):
            return
        if len(self._logged_at) >= 64:
            self._logged_at.clear()
        self._logged_at[message] = now
        log.log(logging.DEBUG if quiet else logging.WARNING, "%s: %s", self.settings.name, message)


def describe_error(error: BaseException) -> str:
    """An error as one line, without any URL credentials nats-py may have put in it."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return redact(text)


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\1***@", text)


async def _close_client(client: NatsClient, timeout_s: float) -> None:
    # Bounded: closing flushes what nats-py still holds, which waits on a stalled server.
    try:
        await asyncio.wait_for(client.close(), timeout_s)
    except Exception as exc:
        log.debug("closing the NATS connection failed: %r", exc)
