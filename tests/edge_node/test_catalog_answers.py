"""Similar items, new items and returning users at a real edge on a real nats-server and redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import redis.asyncio as aioredis
from nats.js.client import JetStreamContext

from central.catalog.store import CatalogStore
from central.lake.erasure import erasures_kv
from edge_node.users import USER_PREFIX, erasure_key
from protocol.catalog import Item
from protocol.events import Event
from protocol.subjects import ERASURES_BUCKET
from protocol.window import SessionWindow
from tests.edge_node.conftest import EdgeFactory, EdgeServer
from tests.servers import NatsServer
from tests.support import eventually

SERVER_KEY = "server-key-for-erasure-tests"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def ready(http: httpx.AsyncClient, edge: EdgeServer) -> None:
    async def answered() -> bool:
        return (await http.get(f"{edge.url}/readyz")).status_code == 200

    await eventually(answered, "the edge to be ready")


async def applied(http: httpx.AsyncClient, edge: EdgeServer, revision: int) -> None:
    async def seen() -> bool:
        body = (await http.get(f"{edge.url}/readyz")).json()
        return bool(body["catalog"]["revision"] >= revision)

    await eventually(seen, f"catalog revision {revision} at the edge")


def covisited_item(edge: EdgeServer) -> str:
    tables = edge.app.state.edge.models.current.tables
    degree = tables.covis_indptr[1:] - tables.covis_indptr[:-1]
    return str(tables.item_ids[int(degree.argmax())])


@pytest.fixture
def edge(
    edge_factory: EdgeFactory, nats_server: NatsServer, redis_url: str, tmp_path: Path
) -> EdgeServer:
    return edge_factory(
        nats_url=nats_server.url,
        bundle_cache_dir=tmp_path / "cache",
        redis=redis_url,
        api_keys=(SERVER_KEY,),
    )


async def test_similar_items_are_covisited_and_never_unavailable(
    edge: EdgeServer, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    await ready(http, edge)
    item = covisited_item(edge)
    first = (await http.get(f"{edge.url}/v1/items/{item}/similar", params={"k": 5})).json()
    names = [entry["item_id"] for entry in first["items"]]
    assert names and item not in names
    assert {entry["reason"] for entry in first["items"]} == {"covisitation"}
    store = await CatalogStore.open(js)
    outcome = await store.put([Item(names[0], available=False)])
    await applied(http, edge, outcome[0].revision)
    after = (await http.get(f"{edge.url}/v1/items/{item}/similar", params={"k": 5})).json()
    assert names[0] not in [entry["item_id"] for entry in after["items"]]


async def test_a_new_item_has_content_neighbours_and_is_one(
    edge: EdgeServer, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    await ready(http, edge)
    store = await CatalogStore.open(js)
    outcomes = await store.put(
        [Item("brand-new", category="novel", price=10.0), Item("also-new", category="novel",
         price=11.0), Item("far", category="novel", price=900.0)]
    )  # fmt: skip
    await applied(http, edge, max(o.revision for o in outcomes))
    body = (await http.get(f"{edge.url}/v1/items/brand-new/similar")).json()
    assert [e["item_id"] for e in body["items"]] == ["also-new", "far"]
    assert {e["reason"] for e in body["items"]} == {"content"}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/items/no-such-item/similar", 404, "item_not_found"),
        ("/v1/items/bad%20id/similar", 400, "bad_parameter"),
        ("/v1/items/x/similar?k=0", 400, "bad_parameter"),
    ],
)
async def test_similar_refuses_bad_input(
    edge: EdgeServer, http: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    await ready(http, edge)
    response = await http.get(edge.url + path)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_new_items_get_one_exploration_slot_in_twenty(
    edge: EdgeServer, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    await ready(http, edge)
    store = await CatalogStore.open(js)
    outcomes = await store.put([Item(f"fresh-{n}", category="novel") for n in range(3)])
    await applied(http, edge, max(o.revision for o in outcomes))
    body = (
        await http.get(f"{edge.url}/v1/recommendations", params={"session_id": "x", "k": 20})
    ).json()
    explored = [e for e in body["items"] if e.get("reason") == "new_item"]
    assert len(explored) == 1 and explored[0]["item_id"].startswith("fresh-")
    assert len(body["items"]) == 20


def event(session: str, item: str, user: str | None = None) -> dict[str, Any]:
    out = {
        "event_id": uuid.uuid4().hex,
        "session_id": session,
        "type": "view",
        "item_id": item,
        "ts": int(time.time() * 1000),
    }
    if user is not None:
        out["user_id"] = user
    return out


async def test_a_returning_user_brings_earlier_items_and_can_be_erased(
    edge: EdgeServer, redis_url: str, nats_server: NatsServer, http: httpx.AsyncClient
) -> None:
    await ready(http, edge)
    items = edge.app.state.edge.models.current.tables.item_ids
    earlier = [event("old-session", items[n], user="u-42") for n in (5, 6, 7)]
    key = {"x-proxima-key": SERVER_KEY}
    posted = await http.post(f"{edge.url}/v1/events", json=earlier, headers=key)
    assert posted.status_code == 202, posted.text
    redis = aioredis.from_url(redis_url)
    try:
        stored = await redis.lrange(USER_PREFIX + "u-42", 0, -1)
        assert stored == [items[i].encode() for i in (7, 6, 5)]
        await http.post(
            f"{edge.url}/v1/events", json=event("new-session", items[9], "u-42"), headers=key
        )
        users = edge.app.state.edge.users
        # the edge's Redis client lives in the edge's loop: build the window here, and read
        # the user's items from the edge's own memory
        window = SessionWindow("new-session", edge.app.state.edge.models.current.window_config)
        window.add(Event("e-new-session-1", "new-session", "view", int(time.time() * 1000),
                         item_id=items[9]))  # fmt: skip
        assert users.user_of("new-session") == "u-42"
        augmented = await users.augment(window)
        assert set(augmented.item_counts) == {items[5], items[6], items[7], items[9]}
        assert augmented.last_item == items[9]

        refused = await http.delete(f"{edge.url}/v1/users/u-42")
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "bad_api_key")
        early = await http.delete(
            f"{edge.url}/v1/users/u-42", headers={"x-proxima-key": SERVER_KEY}
        )
        assert (early.status_code, early.json()["error"]["code"]) == (503, "erasure_unavailable")
        assert users.user_of("new-session") == "u-42"  # refused: nothing was erased
        central = await nats.connect(nats_server.url)
        try:
            await erasures_kv(central.jetstream())  # central makes the bucket, edges write
        finally:
            await central.close()
        wrong = await http.delete(f"{edge.url}/v1/users/u-42", headers={"x-proxima-key": "no"})
        assert wrong.status_code == 401
        erased = await http.delete(
            f"{edge.url}/v1/users/u-42", headers={"x-proxima-key": SERVER_KEY}
        )
        assert erased.status_code == 200, erased.text
        assert erased.json() == {"user_id": "u-42", "sessions": 2, "recorded": True}
        assert await redis.exists(USER_PREFIX + "u-42", "sess:old-session", "sess:new-session") == 0
        assert users.user_of("new-session") is None
        assert "new-session" not in edge.app.state.edge.sessions._local
    finally:
        await redis.aclose()
    client = await nats.connect(nats_server.url)
    try:
        kv = await client.jetstream().key_value(ERASURES_BUCKET)
        record = json.loads((await kv.get(erasure_key("u-42"))).value or b"{}")
        assert record["user_id"] == "u-42"
    finally:
        await client.close()


async def test_an_erasure_recorded_elsewhere_is_applied_here(
    edge: EdgeServer, redis_url: str, nats_server: NatsServer, http: httpx.AsyncClient
) -> None:
    await ready(http, edge)
    items = edge.app.state.edge.models.current.tables.item_ids
    key = {"x-proxima-key": SERVER_KEY}
    posted = await http.post(
        f"{edge.url}/v1/events", json=event("far-session", items[3], "u-far"), headers=key
    )
    assert posted.status_code == 202
    redis = aioredis.from_url(redis_url)
    client = await nats.connect(nats_server.url)
    try:
        assert await redis.exists(USER_PREFIX + "u-far") == 1
        js = client.jetstream()
        kv = await erasures_kv(js)
        record = {"user_id": "u-far", "erased_at": 1, "region": "us", "node": "us/n1"}
        await kv.put(erasure_key("u-far"), json.dumps(record).encode())

        async def gone() -> bool:
            return bool(await redis.exists(USER_PREFIX + "u-far") == 0)

        await eventually(gone, "the other region's erasure applied in this region's Redis")
        assert edge.app.state.edge.users.user_of("far-session") is None
    finally:
        await client.close()
        await redis.aclose()
