"""The local server processes the tests run; they live in :mod:`devtools.localservers`."""

from __future__ import annotations

from devtools.localservers import (
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    LOCALHOST,
    KafkaBroker,
    NatsServer,
    NatsServerFactory,
    RedisServer,
    ServerBinaryNotFoundError,
    ServerProcess,
    ServerStartupError,
    find_executable,
    pick_free_port,
    tcp_port_accepts,
)

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "LOCALHOST",
    "KafkaBroker",
    "NatsServer",
    "NatsServerFactory",
    "RedisServer",
    "ServerBinaryNotFoundError",
    "ServerProcess",
    "ServerStartupError",
    "find_executable",
    "pick_free_port",
    "tcp_port_accepts",
]
