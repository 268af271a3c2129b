"""The NATS configs at work: a central cluster (central.conf, three nodes) and a region's
leaf node (leaf-edge.conf), with edges on the leaf and JetStream only at central."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import RawStreamMsg, StreamInfo
from nats.js.errors import NotFoundError
from nats.js.object_store import OBJ_DEFAULT_CHUNK_SIZE

from protocol.codec import decode_msgpack_event
from protocol.subjects import EVENTS_STREAM, MSG_ID_HEADER, events_subject
from runtime.registry import ModelRegistry
from tests.deploy.conftest import EVENTS_MAX_AGE_S, EVENTS_REPLICAS, POD_NAME, EdgeFromEnv
from tests.deploy.nats_topology import EVENTUALLY_S, RegionBus, central_domain
from tests.servers import LOCALHOST

pytestmark = pytest.mark.integration

BUNDLE_BYTES = 5 * OBJ_DEFAULT_CHUNK_SIZE // 2  # several object store chunks


@pytest.fixture
async def central(region_bus: RegionBus) -> AsyncIterator[NatsClient]:
    client = await nats.connect(region_bus.central_urls, name="test-central", connect_timeout=5)
    yield client
    await client.close()


@pytest.fixture
async def at_leaf(region_bus: RegionBus) -> AsyncIterator[NatsClient]:
    """A client of the leaf node, with the user the edges' Secret holds."""
    edge = region_bus.edge_user
    client = await nats.connect(
        region_bus.leaf_url, user=edge.user, password=edge.password, name="test-edge"
    )
    yield client
    await client.close()


async def last_event_message(client: NatsClient, subject: str) -> RawStreamMsg | None:
    """The newest message of ``subject`` in EVENTS, waiting for it to arrive."""
    deadline = time.monotonic() + EVENTUALLY_S
    js = client.jetstream()
    while time.monotonic() < deadline:
        try:
            return await js.get_last_msg(EVENTS_STREAM, subject)
        except NotFoundError:
            await asyncio.sleep(0.05)
    return None


def test_central_is_one_jetstream_cluster_and_the_leaf_has_no_jetstream(
    region_bus: RegionBus,
) -> None:
    jsz = region_bus.central[0].monitor("jsz")
    assert jsz is not None and jsz["meta_cluster"]["cluster_size"] == len(region_bus.central)
    leaf_varz = region_bus.leaf.monitor("varz")
    assert leaf_varz is not None
    assert not leaf_varz.get("jetstream", {}).get("config"), "the leaf runs JetStream"
    leafz = region_bus.leaf.monitor("leafz")
    assert leafz is not None and leafz["leafnodes"] == 1
    # The leaf binds central's global account, the one whose JetStream holds EVENTS.
    assert [leaf["account"] for leaf in leafz["leafs"]] == ["$G"]


def test_payload_limits_carry_bundle_chunks(region_bus: RegionBus) -> None:
    for server in (*region_bus.central, region_bus.leaf):
        varz = server.monitor("varz")
        assert varz is not None
        assert varz["max_payload"] >= OBJ_DEFAULT_CHUNK_SIZE + 1024, varz["server_name"]


def test_the_leaf_refuses_clients_without_the_edge_user(region_bus: RegionBus) -> None:
    def answer_to(connect: dict[str, Any]) -> bytes:
        with socket.create_connection((LOCALHOST, region_bus.leaf.client_port), timeout=5) as conn:
            conn.recv(4096)  # INFO
            conn.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            return conn.recv(4096)

    edge = region_bus.edge_user
    assert b"Authorization Violation" in answer_to({"verbose": False})
    wrong = {"verbose": False, "user": edge.user, "pass": "not-the-password"}
    assert b"Authorization Violation" in answer_to(wrong)
    assert answer_to({"verbose": False, "user": edge.user, "pass": edge.password}) == b"PONG\r\n"


def test_the_bridge_keeps_the_replicated_events_stream(events_stream: StreamInfo) -> None:
    config = events_stream.config
    assert config.num_replicas == EVENTS_REPLICAS and config.max_age == EVENTS_MAX_AGE_S
    assert events_stream.cluster is not None
    assert len(events_stream.cluster.replicas or []) == EVENTS_REPLICAS - 1


async def test_an_event_published_at_the_leaf_lands_in_the_central_stream(
    central: NatsClient, at_leaf: NatsClient, events_stream: StreamInfo
) -> None:
    event_id = f"e-{uuid.uuid4().hex}"
    event: dict[str, Any] = {
        "event_id": event_id,
        "session_id": "s-leaf",
        "type": "view",
        "item_id": "i1",
        "ts": 1_767_225_600_000,
        "region": "eu",
        "node": "n-leaf",
    }
    subject = events_subject("eu", "n-leaf")
    data = msgpack.packb(event)
    js = at_leaf.jetstream()
    ack = await js.publish(subject, data, headers={MSG_ID_HEADER: event_id})
    assert ack.stream == EVENTS_STREAM and ack.domain == central_domain()
    again = await js.publish(subject, data, headers={MSG_ID_HEADER: event_id})
    assert again.duplicate is True and again.seq == ack.seq
    stored = await last_event_message(central, subject)
    assert stored is not None and stored.seq == ack.seq
    assert decode_msgpack_event(stored.data or b"").event_id == event_id
    assert (stored.headers or {}).get(MSG_ID_HEADER) == event_id


async def test_an_edge_started_from_the_manifests_sends_events_through_the_leaf(
    region_bus: RegionBus,
    central: NatsClient,
    edge_from_env: EdgeFromEnv,
    pod_env: dict[str, str],
    events_stream: StreamInfo,
) -> None:
    edge = edge_from_env(pod_env, nats_url=region_bus.leaf_url)
    event_id = f"e-{uuid.uuid4().hex}"
    body = {"event_id": event_id, "session_id": "s-1", "type": "view", "item_id": "i9", "ts": 1}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(edge.url + "/v1/events", json=body)
    assert answer.status_code == 202, answer.text
    subject = events_subject(edge.settings.region, POD_NAME)
    stored = await last_event_message(central, subject)
    assert stored is not None, f"nothing on {subject} in {EVENTS_STREAM}"
    event = decode_msgpack_event(stored.data or b"")
    assert (event.event_id, event.region, event.node) == (event_id, "eu", POD_NAME)


async def test_bundles_and_rollouts_published_centrally_reach_the_edge_through_the_leaf(
    region_bus: RegionBus,
    central: NatsClient,
    at_leaf: NatsClient,
    edge_from_env: EdgeFromEnv,
    pod_env: dict[str, str],
) -> None:
    # Not a real bundle: the edge must fetch it through the leaf and then refuse it.
    data = os.urandom(BUNDLE_BYTES)
    await ModelRegistry(central.jetstream()).publish_bundle(data, 3)
    await ModelRegistry(central.jetstream()).promote_regions(3, ["eu"])
    leaf_registry = ModelRegistry(at_leaf.jetstream())
    assert await leaf_registry.fetch_bundle(3) == data
    assert (await leaf_registry.rollout_states())["eu"].stable == 3

    edge = edge_from_env(pod_env, nats_url=region_bus.leaf_url)
    deadline = time.monotonic() + EVENTUALLY_S
    model: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            model = (await http.get(edge.url + "/v1/model")).json()
            if model["last_refusal"] is not None:
                break
            await asyncio.sleep(0.05)
        ready = await http.get(edge.url + "/readyz")
    assert model["rollout"]["state"]["stable"] == 3
    assert model["last_refusal"] is not None, model
    assert "bundle-3" in model["last_refusal"]["source"]
    assert ready.status_code == 503  # a refused bundle is never served
