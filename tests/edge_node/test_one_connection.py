"""An edge following the bus holds exactly one NATS connection, and everything rides on it:
events into JetStream, the rollout watch and bundle fetches, telemetry."""

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
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from edge_node.model_store import ModelStore
from protocol.keys import load_private_key
from protocol.subjects import EVENTS_STREAM, events_subject, telemetry_subject
from protocol.telemetry import decode_report
from runtime.registry import ModelRegistry
from tests.edge_node.conftest import EdgeFactory, EdgeServer, Keys
from tests.edge_node.test_model_sync import resign_bundle
from tests.servers import NatsServer
from tests.support import eventually

REGION = "one"
NODE = "c1"
EDGE_CONNECTION = f"proxima-edge-{REGION}-{NODE}"  # the name the edge's settings give it
TEST_CONNECTION = "one-connection-test"
TRAINED_VERSION = 7  # the version the edge_bundle fixture is trained as
EVENTS = 40


@pytest.fixture
async def bus_client(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    """The test's own client (central's side), named so it can be told apart in /connz."""
    client = await nats.connect(nats_server.url, name=TEST_CONNECTION)
    yield client
    await client.close()


@pytest.fixture
def edge(edge_factory: EdgeFactory, nats_server: NatsServer, tmp_path: Path) -> EdgeServer:
    return edge_factory(
        region=REGION,
        node=NODE,
        nats_url=nats_server.url,
        bundle_cache_dir=tmp_path / "bundle-cache",
        telemetry_interval_s=0.2,
    )


async def connections(server: NatsServer) -> list[dict[str, Any]]:
    """The server's client connections, from its monitoring endpoint."""
    url = f"http://127.0.0.1:{server.monitor_port}/connz?subs=1"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    response.raise_for_status()
    listed: list[dict[str, Any]] = response.json()["connections"]
    return listed


async def stored_events(client: NatsClient) -> int:
    try:
        info = await client.jetstream().stream_info(EVENTS_STREAM)
    except NotFoundError:
        return 0
    return info.state.messages


async def holds_events(client: NatsClient, count: int) -> bool:
    return await stored_events(client) >= count


def models_of(edge: EdgeServer) -> ModelStore:
    models: ModelStore = edge.app.state.edge.models
    return models


def served(edge: EdgeServer) -> int | None:
    model = models_of(edge).current
    return model.version if model is not None else None


async def test_an_edge_following_the_bus_holds_exactly_one_connection(
    edge: EdgeServer,
    nats_server: NatsServer,
    bus_client: NatsClient,
    edge_keys: Keys,
    edge_bundle: Path,
) -> None:
    telemetry = await bus_client.subscribe(telemetry_subject(REGION, NODE))
    signing_key = load_private_key(edge_keys.private.read_bytes())
    newer = resign_bundle(
        edge_bundle.read_bytes(), 8, read_with=signing_key.public_key(), sign_with=signing_key
    )
    registry = ModelRegistry(bus_client.jetstream())
    await registry.publish_bundle(newer, 8)
    await registry.promote_regions(8, [REGION])

    # the rollout watch and the bundle fetch ride on the connection
    await eventually(lambda: served(edge) == 8, "the promoted bundle is served")
    await eventually(lambda: not models_of(edge).stale, "the edge confirmed what it serves")

    # events from the spool into JetStream
    model = models_of(edge).current
    assert model is not None
    items = list(model.tables.item_ids[:4])
    events = [
        {"event_id": uuid.uuid4().hex, "session_id": f"one-{n % 5}", "type": "view",
         "item_id": items[n % len(items)], "ts": int(time.time() * 1000)}
        for n in range(EVENTS)
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
        posted = await http.post(
            "/v1/events", content=json.dumps(events), headers={"content-type": "application/json"}
        )
        assert posted.status_code == 202, posted.text
        await eventually(lambda: holds_events(bus_client, EVENTS), "the events in JetStream")
        assert await stored_events(bus_client) == EVENTS  # once each
        message = await bus_client.jetstream().get_last_msg(
            EVENTS_STREAM, events_subject(REGION, NODE)
        )
        assert message.data is not None

        # telemetry too
        report = decode_report((await telemetry.next_msg(timeout=30)).data)
        assert (report.region, report.node) == (REGION, NODE)

        status = (await http.get("/v1/model")).json()
        assert status["bundle"]["version"] == 8 and status["stale"] is False
        assert status["rollout"]["connected"] is True
        metrics = (await http.get("/metrics")).text
        assert "proxima_edge_bus_connected 1.0" in metrics

    listed = await connections(nats_server)
    names = sorted(str(connection.get("name")) for connection in listed)
    assert names == sorted([EDGE_CONNECTION, TEST_CONNECTION]), names
    (held,) = (c for c in listed if c.get("name") == EDGE_CONNECTION)
    # the publisher's acknowledgement inbox and the rollout watch share it
    assert held["subscriptions"] >= 2
    assert edge.app.state.edge.bus.status.connections == 1  # never replaced meanwhile
