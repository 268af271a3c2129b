"""Browser fixtures: the system's headless Chromium driven by Playwright, and a real edge.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (Debian's
``chromium`` package), or the executable named by ``PROXIMA_TEST_CHROMIUM``. Without one,
the browser tests skip and say how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from devtools.demo.edges import STOREFRONT_DIR
from edge_node.config import EdgeSettings
from edge_node.uplink.spool import Spool
from protocol.answers import is_served
from protocol.codec import decode_msgpack_event
from protocol.events import Event
from tests.edge_node.conftest import EdgeServer, Keys, edge_bundle, edge_keys, shop_log_path
from tests.servers import pick_free_port

__all__ = ["edge_bundle", "edge_keys", "shop_log_path"]  # the edge tests' bundle fixtures

DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    path = Path(os.environ.get("PROXIMA_TEST_CHROMIUM", DEFAULT_CHROMIUM))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(
            f"no Chromium at {path}: install it (apt-get install -y chromium) "
            "or set PROXIMA_TEST_CHROMIUM to a Chromium executable"
        )
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def storefront_edge(tmp_path: Path, edge_keys: Keys, edge_bundle: Path) -> Iterator[EdgeServer]:
    """A real edge under uvicorn serving the small test bundle and the demo storefront
    (``devtools/storefront``, which an edge serves only with ``storefront_dir`` set)."""
    settings: dict[str, Any] = {
        "region": "eu",
        "node": "browser-1",
        "public_key": edge_keys.public,
        "bundle": edge_bundle,
        "port": pick_free_port(),
        "spool_dir": tmp_path / "spool",
        "storefront_dir": STOREFRONT_DIR,
    }
    server = EdgeServer(EdgeSettings.load(overrides=settings)).start()
    try:
        yield server
    finally:
        server.stop()


def spooled_events(edge: EdgeServer) -> list[Event]:
    """Every event the edge accepted, oldest first (not the served records of its own
    answers); stops the edge, which holds the spool."""
    edge.stop()
    events: list[Event] = []
    with Spool(edge.settings.spool_dir) as spool:
        while records := spool.read():
            events.extend(decode_msgpack_event(record.payload) for record in records)
    return [event for event in events if not is_served(event)]
