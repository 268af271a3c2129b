"""The snippet presents its site key: posts and beacons from a page of the bound origin count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from devtools.demo.edges import STOREFRONT_DIR
from edge_node.config import EdgeSettings
from tests.browser.conftest import spooled_events
from tests.browser.test_storefront import accepted_count, flushed, open_storefront
from tests.edge_node.conftest import EdgeServer, Keys
from tests.servers import pick_free_port


@pytest.fixture
def keyed_storefront(tmp_path: Path, edge_keys: Keys, edge_bundle: Path) -> Iterator[EdgeServer]:
    port = pick_free_port()
    settings: dict[str, Any] = {
        "region": "eu",
        "node": "browser-keys",
        "public_key": edge_keys.public,
        "bundle": edge_bundle,
        "port": port,
        "spool_dir": tmp_path / "spool",
        "storefront_dir": STOREFRONT_DIR,
        "site_keys": (f"pk_page=http://127.0.0.1:{port}",),
        "api_keys": ("sk_server",),
    }
    server = EdgeServer(EdgeSettings.load(overrides=settings)).start()
    try:
        yield server
    finally:
        server.stop()


def test_events_count_once_the_page_presents_its_site_key(
    page: Page, keyed_storefront: EdgeServer
) -> None:
    open_storefront(page, keyed_storefront)
    session_id = page.evaluate("window.proxima.sessionId")
    without = flushed(page)
    assert without["accepted"] == 0 and without["rejected"] > 0  # the page's own views: 401

    page.evaluate("window.proxima.setKey('pk_page')")
    sent = page.evaluate("window.proxima.track('view', {item_id: 'keyed-item'})")
    with_key = flushed(page)
    assert with_key["accepted"] == 1

    accepted_before = accepted_count(keyed_storefront)
    beaconed = page.evaluate(
        """() => {
            const id = window.proxima.track('search', {query: 'shoes'});
            Object.defineProperty(document, 'visibilityState', {value: 'hidden'});
            document.dispatchEvent(new Event('visibilitychange'));
            return id;
        }"""
    )
    assert page.evaluate("window.proxima.stats.beacons") == 1
    for _ in range(100):  # the browser sends a beacon when it likes
        if accepted_count(keyed_storefront) >= accepted_before + 1:
            break
        page.wait_for_timeout(100)

    kept = {e.event_id for e in spooled_events(keyed_storefront) if e.session_id == session_id}
    assert sent in kept
    assert beaconed in kept
