"""The catalog API as a :class:`runtime.service.Service`: uvicorn in the caller's loop, on the
role's one NATS connection (``proxima-catalog``).

The bucket is created on the first connection; requests while the bus is away are answered
503 ``catalog_unavailable`` with Retry-After, and succeed again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Final

import uvicorn

from central.catalog.api import catalog_app
from central.catalog.errors import CatalogUnavailableError
from central.catalog.settings import CatalogSettings
from central.catalog.store import CatalogStore
from runtime.settings import SettingsError
from runtime.supervisor import BusConnection, BusListener, BusSupervisor

_START_TIMEOUT_S: Final = 10.0
_CONNECT_WAIT_S: Final = 2.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the embedding process owns SIGINT and SIGTERM


class CatalogService(BusListener):
    def __init__(self, settings: CatalogSettings) -> None:
        self.settings = settings
        self.bus = BusSupervisor(settings.nats_settings())
        self.host = settings.catalog_host
        self.port = settings.catalog_port
        self._stores: dict[int, CatalogStore] = {}
        app = catalog_app(settings, self.store)
        config = uvicorn.Config(
            app, loop="none", http="h11", lifespan="off", access_log=False, log_level="warning"
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def store(self) -> CatalogStore:
        try:
            connection = await self.bus.wait_connected(_CONNECT_WAIT_S)
        except TimeoutError as exc:
            raise CatalogUnavailableError("NATS is not connected", retry_after_s=1) from exc
        store = self._stores.get(connection.generation)
        if store is None:
            store = await CatalogStore.open(connection.jetstream())
            self._stores = {connection.generation: store}
        return store

    async def bus_connected(self, connection: BusConnection) -> None:
        self._stores = {connection.generation: await CatalogStore.open(connection.jetstream())}

    async def bus_lost(self) -> None:
        self._stores = {}

    async def start(self) -> None:
        try:
            sock = socket.create_server((self.host, self.port), reuse_port=False)
        except OSError as exc:
            raise SettingsError(
                f"cannot serve the catalog API on {self.host}:{self.port}: {exc.strerror or exc}",
                field="catalog_port",
            ) from exc
        self.port = sock.getsockname()[1]
        self.bus.attach(self)
        await self.bus.start()
        task = self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="catalog-http"
        )
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        try:
            while not self._server.started:
                if task.done() or asyncio.get_running_loop().time() > deadline:
                    raise SettingsError(
                        f"the catalog API on {self.host}:{self.port} did not start",
                        field="catalog_port",
                    )
                await asyncio.sleep(0.01)
        except BaseException:
            await self.close()
            raise

    async def close(self, timeout_s: float = 5.0) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.bus.detach(self)
        await self.bus.close(timeout_s)
