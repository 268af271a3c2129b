"""Edge fixtures: a small trained bundle, keys, and real uvicorn edges on free ports."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from central.datasets import read_log
from central.keys import write_keypair
from central.trainer.pipeline import TrainerConfig, train_bundle
from devtools.demo.edges import STOREFRONT_DIR
from devtools.loggen import GeneratorConfig, generate_file
from edge_node.app import create_app
from edge_node.config import EdgeSettings
from model_export.pack import write_bundle_file
from tests.servers import pick_free_port


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def edge_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    private, public = write_keypair(tmp_path_factory.mktemp("keys"))
    return Keys(private, public)


@pytest.fixture(scope="session")
def shop_log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "shop.csv"
    generate_file(path, GeneratorConfig(sessions=600, items=400, categories=8, seed=3, days=10))
    return path


@pytest.fixture(scope="session")
def edge_bundle(
    tmp_path_factory: pytest.TempPathFactory, edge_keys: Keys, shop_log_path: Path
) -> Path:
    """A real bundle trained on a small synthetic shop log (one per test session)."""
    log, _ = read_log(shop_log_path, "csv")
    result = train_bundle(
        log,
        TrainerConfig(folds=3, max_positions=2_000, max_validation_positions=300),
        version=7,
        private_key_pem=edge_keys.private.read_bytes(),
    )
    path = tmp_path_factory.mktemp("bundle") / "shop.bundle"
    write_bundle_file(path, result.bundle)
    return path


class EdgeServer:
    """An edge app under a real uvicorn server in a background thread."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=settings.port,
            loop="asyncio",
            http="h11",
            ws="websockets-sansio",
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self, timeout_s: float = 15.0) -> EdgeServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"edge on port {self.settings.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


EdgeFactory = Callable[..., EdgeServer]


@pytest.fixture
def edge_factory(tmp_path: Path, edge_keys: Keys, edge_bundle: Path) -> Iterator[EdgeFactory]:
    """Starts edges serving ``edge_bundle``; keyword arguments override settings."""
    started: list[EdgeServer] = []

    def start(**overrides: Any) -> EdgeServer:
        n = len(started)
        values: dict[str, Any] = {
            "region": "eu",
            "node": f"n{n}",
            "public_key": edge_keys.public,
            "bundle": edge_bundle,
            "port": pick_free_port(),
            "spool_dir": tmp_path / f"spool-{n}",
        }
        values.update(overrides)
        server = EdgeServer(EdgeSettings.load(overrides=values)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def edge(edge_factory: EdgeFactory) -> EdgeServer:
    return edge_factory()


@pytest.fixture
def storefront_edge(edge_factory: EdgeFactory) -> EdgeServer:
    """An edge that also serves the demo storefront (off unless ``storefront_dir`` is set)."""
    return edge_factory(storefront_dir=STOREFRONT_DIR)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http_client:
        yield http_client


def start_edge_without_bundle(edge_factory: EdgeFactory, tmp_path: Path) -> EdgeServer:
    """An edge that follows a bus nobody serves, so no bundle ever arrives."""
    return edge_factory(
        bundle=None,
        nats_url=f"nats://127.0.0.1:{pick_free_port()}",
        bundle_cache_dir=tmp_path / "bundle-cache",
    )
