"""The edge's catalog replica against a real nats-server: bootstrap, live hiding, staleness,
and the filter at the end of every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.client import JetStreamContext

from central.catalog.store import CatalogStore
from edge_node.catalog import CatalogReplica
from protocol.catalog import Item
from runtime.nats import NatsSettings
from runtime.supervisor import BusSupervisor
from tests.edge_node.conftest import EdgeFactory, EdgeServer
from tests.servers import NatsServer, NatsServerFactory
from tests.support import eventually


async def started_replica(
    url: str, max_items: int = 1_000_000
) -> tuple[BusSupervisor, CatalogReplica]:
    bus = BusSupervisor(NatsSettings.from_url(url, name="catalog-test-edge"))
    replica = CatalogReplica(bus, max_items=max_items, retry_initial_s=0.05, retry_max_s=0.2)
    await replica.start()
    await bus.start()
    return bus, replica


async def stop(bus: BusSupervisor, replica: CatalogReplica) -> None:
    await replica.close()
    await bus.close()


async def test_a_cold_replica_bootstraps_the_whole_bucket(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    store = await CatalogStore.open(js)
    await store.put([Item(f"i{n}", category="c", available=n % 3 != 0) for n in range(300)])
    bus, replica = await started_replica(nats_server.url)
    try:
        await eventually(replica.bootstrapped.is_set, "the bootstrap")
        status = replica.status
        assert (status.items, status.hidden, status.stale) == (200, 100, False)
        assert replica.hidden("i0") and not replica.hidden("i1")
        await store.patch([{"id": "i1", "stock": 0}])
        await eventually(lambda: replica.hidden("i1"), "i1 out of stock to be hidden")
        await store.delete(["i2"])
        await eventually(lambda: replica.hidden("i2"), "the deleted i2 to be hidden")
        await store.put([Item("i0", available=True, version=5)])
        await eventually(lambda: not replica.hidden("i0"), "i0 back in stock")
    finally:
        await stop(bus, replica)


async def test_no_bucket_is_an_empty_catalog(nats_server: NatsServer) -> None:
    bus, replica = await started_replica(nats_server.url)
    try:
        await eventually(replica.bootstrapped.is_set, "the bootstrap of no bucket")
        assert replica.status.items == 0
    finally:
        await stop(bus, replica)


async def test_memory_is_bounded_but_hidden_items_stay_hidden(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    store = await CatalogStore.open(js)
    await store.put([Item(f"h{n}", available=False) for n in range(5)])
    await store.put([Item(f"s{n}", category="c") for n in range(20)])
    bus, replica = await started_replica(nats_server.url, max_items=10)
    try:
        await eventually(replica.bootstrapped.is_set, "the bootstrap")
        status = replica.status
        assert status.items + status.hidden <= 10
        assert all(replica.hidden(f"h{n}") for n in range(5))
        assert status.dropped == 15
    finally:
        await stop(bus, replica)


async def test_a_lost_bus_keeps_the_catalog_and_says_it_is_stale(
    nats_server_factory: NatsServerFactory,
) -> None:
    server = nats_server_factory()
    client = await nats.connect(server.url)
    store = await CatalogStore.open(client.jetstream())
    await store.put([Item("gone", available=False), Item("kept")])
    await client.close()
    bus, replica = await started_replica(server.url)
    try:
        await eventually(lambda: replica.bootstrapped.is_set() and not replica.stale, "bootstrap")
        server.stop()
        await eventually(lambda: replica.stale, "the replica to say it is stale")
        assert replica.hidden("gone") and replica.get("kept") is not None
        server.start()
        await eventually(lambda: not replica.stale, "the replica to catch up again")
    finally:
        await stop(bus, replica)


@pytest.fixture
def catalog_edge(edge_factory: EdgeFactory, nats_server: NatsServer, tmp_path: Path) -> EdgeServer:
    return edge_factory(
        nats_url=nats_server.url, bundle_cache_dir=tmp_path / "cache", explore_every=0
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def answer(http: httpx.AsyncClient, edge: EdgeServer, session: str) -> dict[str, object]:
    response = await http.get(f"{edge.url}/v1/recommendations", params={"session_id": session})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def ids(body: dict[str, object]) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]  # type: ignore[attr-defined]


async def test_an_unavailable_item_leaves_the_edges_answers_live(
    catalog_edge: EdgeServer, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    async def ready() -> bool:
        return (await http.get(f"{catalog_edge.url}/readyz")).status_code == 200

    await eventually(ready, "the edge to be ready")
    ready_body = (await http.get(f"{catalog_edge.url}/readyz")).json()
    assert ready_body["catalog"]["stale"] is False
    before = ids(await answer(http, catalog_edge, "s-live"))
    assert len(before) == 20
    doomed = before[:3]
    store = await CatalogStore.open(js)
    outcomes = await store.put([Item(i, available=False) for i in doomed])
    revision = max(o.revision for o in outcomes)

    async def filtered() -> bool:
        body = await answer(http, catalog_edge, "s-live")
        return body["catalog_revision"] >= revision  # type: ignore[operator]

    await eventually(filtered, "the edge to apply the catalog")
    after = await answer(http, catalog_edge, "s-live")
    assert not set(doomed) & set(ids(after))
    assert len(ids(after)) == 20  # the pool was deep enough to fill k
    metrics = (await http.get(f"{catalog_edge.url}/metrics")).text
    assert "proxima_edge_catalog_hidden 3.0" in metrics
    assert "proxima_edge_catalog_stale 0.0" in metrics


async def test_catalog_prices_reach_the_bundles_features(
    catalog_edge: EdgeServer, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    models = catalog_edge.app.state.edge.models
    await eventually(lambda: catalog_edge.app.state.edge.catalog.bootstrapped.is_set(), "boot")
    item = models.current.tables.item_ids[0]
    store = await CatalogStore.open(js)
    await store.put([Item(item, price=1234.5)])
    index = models.current.tables.item_index[item]
    await eventually(
        lambda: float(models.current.tables.price[index]) == 1234.5, "the price in the tables"
    )


def test_an_edge_that_cannot_reach_the_bus_serves_stale_and_says_the_catalog_is_missing(
    edge_factory: EdgeFactory, tmp_path: Path
) -> None:
    from tests.servers import pick_free_port

    edge = edge_factory(
        nats_url=f"nats://127.0.0.1:{pick_free_port()}", bundle_cache_dir=tmp_path / "c"
    )
    response = httpx.get(f"{edge.url}/readyz", timeout=10)
    assert response.status_code == 200  # DESIGN §6: a verified bundle, the bus away: ready, stale
    body = response.json()
    assert body["stale"] is True
    assert body["catalog"]["loaded"] is False
