"""The demo storefront in headless Chromium against a real edge.

What the page did is checked where it landed: in the events the edge accepted (read back
from its spool), in the WebSocket frames the browser received, and in the DOM.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Page, Route, WebSocket
from prometheus_client.parser import text_string_to_metric_families

from protocol.events import Event
from tests.browser.conftest import ARTIFACTS, spooled_events
from tests.edge_node.conftest import EdgeServer

EVENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
STRIP_TILES = "#for-you [data-proxima-item]"
CATALOG_TILES = "#catalog [data-proxima-item]"


class StreamFrames:
    """Counts the recommendation pushes the page receives over ``/v1/stream``."""

    def __init__(self, page: Page) -> None:
        self.pushes: list[str] = []
        page.on("websocket", self._opened)

    def _opened(self, socket: WebSocket) -> None:
        if "/v1/stream" in socket.url:
            socket.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        text = payload if isinstance(payload, str) else payload.decode()
        if '"type":"recommendations"' in text:
            self.pushes.append(text)


def open_storefront(page: Page, edge: EdgeServer) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{edge.url}/demo/")
    page.wait_for_function(
        f"() => document.querySelectorAll('{CATALOG_TILES}').length === 12"
        f" && document.querySelectorAll('{STRIP_TILES}').length === 6"
    )
    return errors


def strip_items(page: Page) -> list[str]:
    items: list[str] = page.eval_on_selector_all(
        STRIP_TILES, "tiles => tiles.map(t => t.dataset.proximaItem)"
    )
    return items


def look_at(page: Page, selector: str) -> str:
    """Clicks a product tile, waits for the product view, closes it; returns the item id."""
    tile = page.locator(selector)
    item_id = tile.get_attribute("data-proxima-item")
    assert item_id
    tile.click()
    page.wait_for_selector("#detail:not([hidden])")
    page.click("#detail-close")
    return item_id


def flushed(page: Page) -> dict[str, Any]:
    """Sends whatever the snippet still holds and returns its counters."""
    stats: dict[str, Any] = page.evaluate(
        """async () => {
            const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
            await sleep(400);  // impressions are gathered for 300 ms before they are queued
            for (let i = 0; i < 100 && window.proxima.pending > 0; i++) {
                window.proxima.flush();
                await sleep(100);
            }
            return {...window.proxima.stats, pending: window.proxima.pending};
        }"""
    )
    assert stats["pending"] == 0, stats
    return stats


def accepted_count(edge: EdgeServer) -> float:
    text = httpx.get(f"{edge.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "proxima_edge_events_total" and sample.labels == {
                "outcome": "accepted"
            }:
                return sample.value
    return 0.0


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [event for event in events if event.type == kind]


def test_storefront_events_reach_the_edge_and_the_strip_follows_live(
    page: Page, storefront_edge: EdgeServer
) -> None:
    frames = StreamFrames(page)
    errors = open_storefront(page, storefront_edge)
    session_id = page.evaluate("window.proxima.sessionId")
    first_strip = strip_items(page)
    first_request = page.get_attribute(STRIP_TILES, "data-proxima-request")
    assert first_request
    assert page.get_attribute("#for-you", "data-live-updates") == "0"

    looked_at = [look_at(page, f"{CATALOG_TILES} >> nth={n}") for n in (0, 3, 5)]
    page.wait_for_function(
        "() => Number(document.querySelector('#for-you').dataset.liveUpdates) >= 1"
    )
    changed_strip = strip_items(page)
    strip_click = page.locator(f"{STRIP_TILES} >> nth=0")
    strip_item = strip_click.get_attribute("data-proxima-item")
    strip_request = strip_click.get_attribute("data-proxima-request")
    look_at(page, f"{STRIP_TILES} >> nth=0")
    stats = flushed(page)
    live_updates = int(page.get_attribute("#for-you", "data-live-updates") or 0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "storefront.png"), full_page=True)

    assert errors == []
    # The strip changed because of pushes over the WebSocket, not a page reload.
    assert changed_strip != first_strip
    assert live_updates >= 1
    assert len(frames.pushes) >= 1 + live_updates
    assert stats["messages"] >= len(frames.pushes)
    assert stats["rejected"] == 0 and stats["dropped"] == 0

    # The edge now answers this session from its window, not from popularity.
    answer = httpx.get(
        f"{storefront_edge.url}/v1/recommendations",
        params={"session_id": session_id, "k": 6},
        timeout=10,
    ).json()
    assert answer["cold"] is False

    events = [e for e in spooled_events(storefront_edge) if e.session_id == session_id]
    assert len(events) == stats["accepted"]
    assert len({e.event_id for e in events}) == len(events)
    assert all(EVENT_ID.fullmatch(e.event_id) for e in events)
    assert [e.item_id for e in of_type(events, "view")] == [*looked_at, strip_item]

    clicks = of_type(events, "click")
    assert [c.item_id for c in clicks] == [*looked_at, strip_item]
    assert [c.request_id for c in clicks[:3]] == [None, None, None]  # catalog tiles
    assert clicks[3].request_id == strip_request  # the answer that put the tile there
    assert all(c.context and c.context.get("page") == "/demo/" for c in clicks)

    impressions = of_type(events, "impression")
    assert impressions
    assert all(i.request_id and i.items for i in impressions)
    assert any(
        i.request_id == first_request and set(i.items or ()) == set(first_strip)
        for i in impressions
    )
    shown = {item for i in impressions for item in i.items or ()}
    assert set(changed_strip) - set(first_strip) <= shown


def test_a_retried_batch_reuses_its_event_ids(page: Page, storefront_edge: EdgeServer) -> None:
    """The edge takes the first attempt, the page never hears back, and retries the same ids."""
    lost_answers: list[str] = []

    def lose_first_answer(route: Route) -> None:
        if lost_answers:
            route.continue_()
            return
        body = route.request.post_data or ""
        route.fetch()  # the edge gets the batch and accepts it
        lost_answers.append(body)
        route.abort("connectionreset")  # the page sees a failed request

    open_storefront(page, storefront_edge)
    page.route("**/v1/events", lose_first_answer)
    session_id = page.evaluate("window.proxima.sessionId")
    event_id = page.evaluate("window.proxima.track('search', {query: 'waterproof jacket'})")
    page.wait_for_function("() => window.proxima.stats.duplicate >= 1")
    stats = flushed(page)

    assert event_id in lost_answers[0]
    assert stats["retried"] >= 1
    events = [e for e in spooled_events(storefront_edge) if e.session_id == session_id]
    searches = of_type(events, "search")
    assert [(e.event_id, e.query) for e in searches] == [(event_id, "waterproof jacket")]


def test_hiding_the_page_sends_the_queue_as_a_beacon(
    page: Page, storefront_edge: EdgeServer
) -> None:
    open_storefront(page, storefront_edge)
    flushed(page)
    accepted_before = accepted_count(storefront_edge)
    session_id = page.evaluate("window.proxima.sessionId")
    # An impression waits for the batch timer; hiding the tab must not leave it behind.
    event_id = page.evaluate(
        """() => {
            const id = window.proxima.track('impression', {items: ['beacon-item'],
                                                           request_id: 'beacon-request'});
            Object.defineProperty(document, 'visibilityState', {value: 'hidden'});
            document.dispatchEvent(new Event('visibilitychange'));
            return id;
        }"""
    )
    assert page.evaluate("window.proxima.stats.beacons") == 1
    for _ in range(100):  # the browser sends a beacon when it likes
        if accepted_count(storefront_edge) >= accepted_before + 1:
            break
        page.wait_for_timeout(100)

    events = [e for e in spooled_events(storefront_edge) if e.session_id == session_id]
    beaconed = [e for e in events if e.event_id == event_id]
    assert [(e.type, e.request_id, e.items) for e in beaconed] == [
        ("impression", "beacon-request", ("beacon-item",))
    ]
