"""The catalog store's ordering under racing writers, on a real JetStream KV."""

from __future__ import annotations

import asyncio

import nats
from nats.js.client import JetStreamContext

from central.catalog.store import CatalogStore
from protocol.catalog import Item
from tests.servers import NatsServer


async def test_racing_writers_leave_the_highest_version(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    clients = [await nats.connect(nats_server.url) for _ in range(4)]
    try:
        stores = [await CatalogStore.open(c.jetstream()) for c in clients]
        versions = list(range(1, 41))
        await asyncio.gather(
            *(
                stores[v % len(stores)].put([Item("hot", price=float(v), version=v)])
                for v in reversed(versions)
            )
        )
        stored = await stores[0].get("hot")
        assert stored is not None
        assert (stored.item.version, stored.item.price) == (40, 40.0)
    finally:
        for client in clients:
            await client.close()


async def test_a_tombstone_survives_an_older_put_and_a_newer_one_revives(
    js: JetStreamContext,
) -> None:
    store = await CatalogStore.open(js)
    await store.put([Item("t", version=3)])
    await store.delete(["t"])  # version 4
    assert [o.status for o in await store.put([Item("t", version=4)])] == ["stale"]
    assert [o.status for o in await store.put([Item("t", version=5)])] == ["updated"]
    stored = await store.get("t")
    assert stored is not None and not stored.item.deleted and stored.item.servable
