"""Shared fixtures: real servers (started lazily, once per session) and the shared data set.

Set ``PROXIMA_TEST_NATS_URL``, ``PROXIMA_TEST_REDIS_URL`` or ``PROXIMA_TEST_KAFKA_BOOTSTRAP``
to point the tests at servers that are already running instead of starting local ones, and
``PROXIMA_SHARED_DATA`` to read the shared data set from somewhere other than ``../shared/data``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import nats
import pytest
from nats.js import JetStreamContext

from devtools.localservers import KafkaBroker, NatsServer, NatsServerFactory, RedisServer
from tests.streams import make_events_stream_now

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

SharedFile = Callable[[str], Path]


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external_url = os.environ.get("PROXIMA_TEST_NATS_URL")
    if external_url:
        yield external_url
        return
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        make_events_stream_now(server.url)  # as central would: edges only bind to it
        yield server.url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external_url = os.environ.get("PROXIMA_TEST_REDIS_URL")
    if external_url:
        yield external_url
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external_bootstrap = os.environ.get("PROXIMA_TEST_KAFKA_BOOTSTRAP")
    if external_bootstrap:
        yield external_bootstrap
        return
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker.bootstrap


@pytest.fixture
def nats_server_factory(tmp_path: Path) -> Iterator[NatsServerFactory]:
    """Start private nats-servers that a test may kill and restart; all stopped at test end."""
    servers: list[NatsServer] = []

    def start_nats_server() -> NatsServer:
        server = NatsServer(tmp_path / f"nats-{len(servers)}")
        servers.append(server)
        return server.start()

    yield start_nats_server
    for server in servers:
        server.close()


@pytest.fixture
def nats_server(nats_server_factory: NatsServerFactory) -> NatsServer:
    """A private nats-server for one test (the session's ``nats_url`` is shared), with the
    EVENTS stream central makes (edges only bind to it; ``nats_server_factory`` has none)."""
    server = nats_server_factory()
    make_events_stream_now(server.url)
    return server


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    yield client.jetstream()
    await client.close()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared data directory; skips the requesting test when it is not checked out."""
    configured = os.environ.get("PROXIMA_SHARED_DATA")
    data_dir = Path(configured) if configured else DEFAULT_SHARED_DATA_DIR
    if not data_dir.is_dir():
        _skip_missing_shared_data(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def shared_file(shared_data_dir: Path) -> SharedFile:
    """``shared_file("movielens-100k.csv")`` gives that file's path, or skips if it is absent."""

    def path_of(name: str) -> Path:
        path = shared_data_dir / name
        if not path.is_file():
            _skip_missing_shared_data(path)
        return path

    return path_of


def _skip_missing_shared_data(path: Path) -> NoReturn:
    pytest.skip(
        f"shared data not found at {path}: "
        "set PROXIMA_SHARED_DATA or check out shared/ beside the repo"
    )
