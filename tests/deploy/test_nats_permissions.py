"""Least privilege on the shipped NATS configs: what each credential may and may not do.

The servers run central.conf and leaf-edge.conf as shipped (only addresses moved, see
:mod:`tests.deploy.nats_topology`). An edge's credential, at its region's leaf, publishes
events and telemetry of its region and reads the rollout record and bundles; it is refused
when it writes the rollout KV or the object store, purges EVENTS, publishes as another
region or reads any region's events. The central roles' users are refused what is not
their role's. A refusal is a permissions violation the server reports to the client, and
the state at central is unchanged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamInfo

from central.rollout.evidence import evidence_kv
from central.rollout.store import AUDIT_STREAM, ensure_audit_stream, plans_kv
from protocol.subjects import EVENTS_STREAM, MSG_ID_HEADER
from runtime.registry import ModelRegistry
from tests.deploy.nats_topology import Credentials, RegionBus
from tests.servers import LOCALHOST
from tests.support import eventually

pytestmark = pytest.mark.integration

REFUSAL_WAIT_S = 3.0  # a refused request gets no answer: how long to wait for one


class Client:
    """A NATS client that keeps the asynchronous errors the server sends it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = NatsClient()

    async def connect(self, url: str | list[str], credentials: Credentials) -> Client:
        async def on_error(error: Exception) -> None:
            self.errors.append(str(error).lower())

        await self.nc.connect(
            url,
            user=credentials.user,
            password=credentials.password,
            error_cb=on_error,
            connect_timeout=5,
            allow_reconnect=False,
            max_reconnect_attempts=1,
        )
        return self

    def violations(self, kind: str) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e and kind in e]


ClientFactory = Callable[[str | list[str], Credentials], Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    made: list[Client] = []

    async def make(url: str | list[str], credentials: Credentials) -> Client:
        client = await Client().connect(url, credentials)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.nc.close()


@pytest.fixture
async def admin(region_bus: RegionBus, connect: ClientFactory) -> NatsClient:
    return (await connect(region_bus.central_urls, region_bus.central_user)).nc


@pytest.fixture
async def edge(region_bus: RegionBus, connect: ClientFactory) -> Client:
    return await connect(region_bus.leaf_url, region_bus.edge_user)


def event(region: str) -> tuple[str, bytes, str]:
    event_id = f"e-{uuid.uuid4().hex}"
    body = {"event_id": event_id, "session_id": "s-perm", "type": "view", "item_id": "i1",
            "ts": 1_767_225_600_000, "region": region, "node": "n-perm"}  # fmt: skip
    return f"events.{region}.n-perm", msgpack.packb(body), event_id


async def refused(action: Awaitable[object]) -> None:
    """``action`` gets no answer (the server dropped the request) or an error."""
    with pytest.raises((nats.errors.Error, TimeoutError)):
        await asyncio.wait_for(action, REFUSAL_WAIT_S)


async def test_an_edge_publishes_its_regions_events_and_telemetry(
    region_bus: RegionBus, admin: NatsClient, edge: Client, events_stream: StreamInfo
) -> None:
    subject, payload, event_id = event(region_bus.region)
    ack = await edge.nc.jetstream().publish(subject, payload, headers={MSG_ID_HEADER: event_id})
    assert ack.stream == EVENTS_STREAM
    stored = await admin.jetstream().get_last_msg(EVENTS_STREAM, subject)
    assert stored.headers is not None and stored.headers[MSG_ID_HEADER] == event_id

    telemetry = await admin.subscribe(f"telemetry.{region_bus.region}.>")
    await admin.flush()
    received: list[bytes] = []

    async def sent_and_seen() -> bool:
        await edge.nc.publish(f"telemetry.{region_bus.region}.n-perm", b"status")
        await edge.nc.flush()
        try:
            received.append((await telemetry.next_msg(timeout=0.2)).data)
        except nats.errors.TimeoutError:
            return False
        return True

    await eventually(sent_and_seen, "telemetry from the leaf at central")  # interest propagates
    assert received == [b"status"] and not edge.errors


async def test_an_edge_reads_bundles_and_its_rollout_record_and_watches_it(
    region_bus: RegionBus, admin: NatsClient, edge: Client
) -> None:
    central = ModelRegistry(admin.jetstream())
    await central.publish_bundle(b"bundle bytes", 41)
    await central.promote_regions(41, [region_bus.region])
    at_leaf = ModelRegistry(edge.nc.jetstream())
    assert await at_leaf.fetch_bundle(41) == b"bundle bytes"
    state = await at_leaf.current_rollout(region_bus.region)
    assert state is not None and state.stable == 41
    watcher = await at_leaf.watch_rollout(region_bus.region)
    try:
        assert watcher is not None
    finally:
        stop = getattr(watcher, "stop", None)
        if stop is not None:
            await stop()
    assert not edge.violations("publish"), edge.errors


async def test_an_edge_cannot_write_the_rollout_record_or_the_object_store(
    region_bus: RegionBus, admin: NatsClient, edge: Client
) -> None:
    central = ModelRegistry(admin.jetstream())
    await central.publish_bundle(b"good bundle", 42)
    await central.promote_regions(42, [region_bus.region])
    before = await central.current_rollout(region_bus.region)

    kv = await edge.nc.jetstream().key_value("proxima-rollout")
    await refused(kv.put(region_bus.region, b'{"stable": 1}'))
    store = await edge.nc.jetstream().object_store("proxima-models")
    await refused(store.put("bundle-999", b"forged"))
    await refused(edge.nc.jetstream().delete_key_value("proxima-rollout"))

    assert await central.current_rollout(region_bus.region) == before
    assert 999 not in await central.bundle_versions()
    assert edge.violations('"$kv.proxima-rollout.'), edge.errors
    assert edge.violations('"$o.proxima-models.'), edge.errors


async def test_an_edge_cannot_purge_or_delete_the_events_stream(
    region_bus: RegionBus, admin: NatsClient, edge: Client, events_stream: StreamInfo
) -> None:
    subject, payload, event_id = event(region_bus.region)
    await admin.jetstream().publish(subject, payload, headers={MSG_ID_HEADER: event_id})
    before = (await admin.jetstream().stream_info(EVENTS_STREAM)).state.messages

    await refused(edge.nc.jetstream().purge_stream(EVENTS_STREAM))
    await refused(edge.nc.jetstream().delete_stream(EVENTS_STREAM))

    assert (await admin.jetstream().stream_info(EVENTS_STREAM)).state.messages >= before > 0
    assert edge.violations("stream.purge.events"), edge.errors
    assert edge.violations("stream.delete.events"), edge.errors


async def test_an_edge_cannot_read_events_or_publish_as_another_region(
    region_bus: RegionBus, admin: NatsClient, edge: Client, events_stream: StreamInfo
) -> None:
    other = "us" if region_bus.region != "us" else "eu"
    sniffer = await edge.nc.subscribe("events.>")
    await edge.nc.flush()
    await eventually(lambda: edge.violations("subscription"), "the subscription refused")
    subject, payload, event_id = event(other)
    await admin.publish(f"events.{other}.n-central", payload)
    await admin.flush()
    with pytest.raises(nats.errors.TimeoutError):
        await sniffer.next_msg(timeout=1.0)
    # Nor through JetStream: a consumer on EVENTS is refused.
    await refused(edge.nc.jetstream().pull_subscribe("events.>", durable=None, stream="EVENTS"))

    await refused(edge.nc.jetstream().publish(subject, payload, headers={MSG_ID_HEADER: event_id}))
    assert edge.violations(f'"events.{other}.'), edge.errors
    with pytest.raises(nats.js.errors.NotFoundError):
        await admin.jetstream().get_last_msg(EVENTS_STREAM, subject)


async def test_central_roles_are_refused_what_is_not_theirs(
    region_bus: RegionBus, connect: ClientFactory, events_stream: StreamInfo
) -> None:
    users = region_bus.role_users
    bridge = await connect(region_bus.central_urls, users["bridge"])

    async def write_rollout() -> None:
        await bridge.nc.publish("$KV.proxima-rollout.eu", b"x")
        await bridge.nc.flush()

    await write_rollout()
    await eventually(lambda: bridge.violations('"$kv.proxima-rollout.eu"'), "the write refused")

    trainer = await connect(region_bus.central_urls, users["trainer"])
    await refused(trainer.nc.jetstream().purge_stream(EVENTS_STREAM))
    assert trainer.violations("stream.purge.events"), trainer.errors

    controller = await connect(region_bus.central_urls, users["controller"])
    await controller.nc.subscribe("events.>")
    await controller.nc.flush()
    await eventually(lambda: controller.violations("subscription"), "events refused")


async def test_the_controller_may_do_its_own_work(
    region_bus: RegionBus, connect: ClientFactory, admin: NatsClient
) -> None:
    admin_js = admin.jetstream()
    await plans_kv(admin_js)  # made by the operator's first `rollout start`
    await ensure_audit_stream(admin_js)
    controller = await connect(region_bus.central_urls, region_bus.role_users["controller"])
    js = controller.nc.jetstream()
    plans = await js.key_value("proxima-rollout-plans")
    await plans.put("eu", b"{}")
    evidence = await evidence_kv(js)  # its own bucket, made on first use
    await evidence.put("eu", b"{}")
    ack = await js.publish("rollout.audit.eu", b"{}")
    assert ack.stream == AUDIT_STREAM
    assert not controller.violations(""), controller.errors


async def test_the_leaf_reaches_central_over_tls(region_bus: RegionBus) -> None:
    leafz = region_bus.central[0].monitor("leafz") or {}
    connz = region_bus.leaf.monitor("varz") or {}
    assert leafz.get("leafnodes") == 1, leafz
    remotes = connz.get("leaf", {}).get("remotes") or []
    assert remotes and all(r.get("url", "").startswith("tls://") or r.get("urls") for r in remotes)
    # The leafnodes port refuses plaintext: the first thing it sends is a TLS-only INFO.
    reader, writer = await asyncio.open_connection(LOCALHOST, region_bus.central[0].leaf_port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert b'"tls_required":true' in info
