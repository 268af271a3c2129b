"""Events posted over HTTP to edges in two regions reach Kafka, each once after dedupe.

Every test posts JSON batches of 100-500 events from several concurrent posters per edge,
reads ``proxima.events`` back from the beginning, and checks that the distinct event ids
there are exactly the ones posted, each stamped with the region of the edge that took it.
Copies beyond the first (at-least-once delivery) are allowed and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest

from central.bridge import Bridge
from edge_node.bundle_cache import BundleCache
from edge_node.uplink.publisher import EventPublisher
from protocol.subjects import EVENTS_STREAM
from tests.edge_node.conftest import EdgeServer
from tests.integration.conftest import (
    BridgeProcess,
    EdgeStarter,
    EdgeTraffic,
    EventsTopicReader,
    PostTally,
    assert_exactly_once_after_dedupe,
    eventually,
    expected_regions,
    in_process_bridge,
    make_events,
    models_of,
    post_traffic,
)
from tests.servers import KafkaBroker, NatsServer, NatsServerFactory

pytestmark = pytest.mark.integration

REGIONS = ("eu", "us")
TOTAL_EVENTS = 10_000
SESSIONS_PER_REGION = 1_000  # five events each: far below the per-session rate limit
POSTERS_PER_EDGE = 4
TRAINED_VERSION = 7  # the version the edge_bundle fixture is trained as


@pytest.fixture
def nats_server(nats_server_factory: NatsServerFactory) -> NatsServer:
    return nats_server_factory()


@pytest.fixture
def edges(start_edge: EdgeStarter, nats_server: NatsServer, edge_bundle: Path) -> list[EdgeServer]:
    return [start_edge(region, nats_server.url, bundle=edge_bundle) for region in REGIONS]


def two_regions_of_traffic(edges: list[EdgeServer]) -> list[EdgeTraffic]:
    per_edge = TOTAL_EVENTS // len(edges)
    return [
        EdgeTraffic(
            edge,
            make_events(
                per_edge, region=edge.settings.region, sessions=SESSIONS_PER_REGION, seed=n
            ),
        )
        for n, edge in enumerate(edges)
    ]


def part_of(traffic: list[EdgeTraffic], start: float, end: float) -> list[EdgeTraffic]:
    """Each edge's events from fraction ``start`` to ``end`` of its stream, in order."""
    return [
        EdgeTraffic(
            share.edge,
            share.events[int(start * len(share.events)) : int(end * len(share.events))],
        )
        for share in traffic
    ]


def publisher_of(edge: EdgeServer) -> EventPublisher:
    publisher: EventPublisher | None = edge.app.state.edge.publisher
    assert publisher is not None
    return publisher


async def stream_message_count(nats_url: str) -> int:
    connection = await nats.connect(nats_url)
    try:
        info = await connection.jetstream().stream_info(EVENTS_STREAM)
        return info.state.messages
    finally:
        await connection.close()


def report(what: str, tally: PostTally, reader: EventsTopicReader) -> None:
    print(
        f"\n{what}: {tally.accepted:,} events accepted in {tally.posts} posts "
        f"({tally.retries} sent again); Kafka holds {reader.records:,} records, "
        f"{reader.distinct:,} distinct events ({reader.duplicates} extra copies)"
    )


@pytest.fixture
async def bridge(nats_server: NatsServer, kafka_broker: KafkaBroker) -> AsyncIterator[Bridge]:
    async with in_process_bridge(nats_server.url, kafka_broker.bootstrap) as running:
        yield running


async def test_ten_thousand_events_from_two_regions_reach_kafka_once_each(
    nats_server: NatsServer,
    edges: list[EdgeServer],
    bridge: Bridge,
    events_topic: EventsTopicReader,
) -> None:
    traffic = two_regions_of_traffic(edges)
    expected = expected_regions(traffic)
    tally = PostTally()

    await post_traffic(traffic, tally, posters_per_edge=POSTERS_PER_EDGE, seed=1)
    await events_topic.wait_for_all(set(expected))
    await events_topic.read_stragglers()

    report("steady state", tally, events_topic)
    assert tally.accepted == TOTAL_EVENTS and tally.duplicate == 0
    assert tally.accepted_by_region == {region: TOTAL_EVENTS // 2 for region in REGIONS}
    assert_exactly_once_after_dedupe(events_topic, expected)
    assert await stream_message_count(nats_server.url) == TOTAL_EVENTS
    publishers = [publisher_of(edge) for edge in edges]
    await eventually(
        lambda: all(p.status.pending_records == 0 for p in publishers), "both spools are drained"
    )
    assert all(p.status.published >= TOTAL_EVENTS // 2 for p in publishers)
    assert bridge.status.errors == 0 and bridge.status.dead_lettered == 0


async def test_events_survive_the_nats_server_being_killed_and_restarted_mid_stream(
    nats_server: NatsServer,
    edges: list[EdgeServer],
    bridge: Bridge,
    events_topic: EventsTopicReader,
) -> None:
    traffic = two_regions_of_traffic(edges)
    expected = expected_regions(traffic)
    tally = PostTally()
    port, store = nats_server.port, nats_server.store_dir

    before = asyncio.create_task(
        post_traffic(part_of(traffic, 0.0, 0.4), tally, posters_per_edge=POSTERS_PER_EDGE, seed=2)
    )
    await events_topic.wait_for(lambda: events_topic.distinct >= 500, "the first events")
    await asyncio.to_thread(nats_server.kill)  # SIGKILL, while events are on their way
    await before
    accepted_before_down = tally.accepted
    await post_traffic(part_of(traffic, 0.4, 0.7), tally, posters_per_edge=POSTERS_PER_EDGE, seed=3)
    accepted_while_down = tally.accepted - accepted_before_down
    assert all(not publisher_of(edge).status.connected for edge in edges)
    after = asyncio.create_task(
        post_traffic(part_of(traffic, 0.7, 1.0), tally, posters_per_edge=POSTERS_PER_EDGE, seed=4)
    )
    await asyncio.to_thread(nats_server.start)
    assert (nats_server.port, nats_server.store_dir) == (port, store)
    await after

    await events_topic.wait_for_all(set(expected))
    await events_topic.read_stragglers()

    report("nats-server killed and restarted", tally, events_topic)
    assert accepted_while_down == int(0.7 * TOTAL_EVENTS) - int(0.4 * TOTAL_EVENTS)
    assert tally.accepted == TOTAL_EVENTS
    assert_exactly_once_after_dedupe(events_topic, expected)
    # JetStream dropped what edges sent twice across the restart (Nats-Msg-Id).
    assert await stream_message_count(nats_server.url) == TOTAL_EVENTS


async def test_events_survive_the_bridge_being_sigkilled_and_restarted_mid_stream(
    nats_server: NatsServer,
    edges: list[EdgeServer],
    kafka_broker: KafkaBroker,
    events_topic: EventsTopicReader,
    tmp_path: Path,
) -> None:
    traffic = two_regions_of_traffic(edges)
    expected = expected_regions(traffic)
    tally = PostTally()
    bridge = BridgeProcess(nats_server.url, kafka_broker.bootstrap, tmp_path / "bridge.log")
    try:
        bridge.start()
        await bridge.wait_until_running()
        before = asyncio.create_task(
            post_traffic(
                part_of(traffic, 0.0, 0.5), tally, posters_per_edge=POSTERS_PER_EDGE, seed=5
            )
        )
        await events_topic.wait_for(lambda: events_topic.distinct >= 1_000, "the first events")
        await bridge.kill()
        forwarded_before_kill = events_topic.distinct
        killed_while_posting = not before.done()
        await before
        await post_traffic(
            part_of(traffic, 0.5, 0.75), tally, posters_per_edge=POSTERS_PER_EDGE, seed=6
        )
        after = asyncio.create_task(
            post_traffic(
                part_of(traffic, 0.75, 1.0), tally, posters_per_edge=POSTERS_PER_EDGE, seed=7
            )
        )
        bridge.start()
        await after
        await events_topic.wait_for_all(set(expected))
        assert await bridge.stop() == 0, bridge.log_text()
        await events_topic.read_stragglers()
    finally:
        bridge.reap()

    report(
        f"bridge SIGKILLed after {forwarded_before_kill:,} events "
        f"({'while' if killed_while_posting else 'after'} the first half was posted) "
        "and restarted",
        tally,
        events_topic,
    )
    assert forwarded_before_kill < TOTAL_EVENTS
    assert tally.accepted == TOTAL_EVENTS
    assert_exactly_once_after_dedupe(events_topic, expected)
    assert await stream_message_count(nats_server.url) == TOTAL_EVENTS


async def test_an_edge_started_with_nats_down_serves_its_cached_bundle_and_delivers_later(
    start_edge: EdgeStarter,
    edge_bundle: Path,
    kafka_broker: KafkaBroker,
    events_topic: EventsTopicReader,
    tmp_path: Path,
) -> None:
    nats_server = NatsServer(tmp_path / "nats-started-later")  # its port is chosen, not opened
    try:
        cache = BundleCache(tmp_path / "bundle-cache-eu")
        cache.store(TRAINED_VERSION, edge_bundle.read_bytes())
        edge = start_edge("eu", nats_server.url, bundle_cache_dir=cache.directory)
        events = make_events(1_000, region="eu", sessions=200, seed=8)
        traffic = [EdgeTraffic(edge, events)]
        tally = PostTally()

        async with httpx.AsyncClient(base_url=edge.url, timeout=10.0) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert {key: body[key] for key in ("ready", "version", "stale")} == {
                "ready": True, "version": TRAINED_VERSION, "stale": True,
            }  # fmt: skip
            assert body["catalog"]["loaded"] is False  # said, not hidden
            info = (await http.get("/v1/model")).json()
            assert info["stale"] is True and info["bundle"]["version"] == TRAINED_VERSION
            assert info["rollout"]["connected"] is False

            await post_traffic(traffic, tally, posters_per_edge=2, seed=9)
            assert tally.accepted == len(events)
            assert publisher_of(edge).status.pending_records == len(events)

            url = nats_server.url
            await asyncio.to_thread(nats_server.start)
            assert nats_server.url == url, "the port was taken meanwhile; run again"
            async with in_process_bridge(nats_server.url, kafka_broker.bootstrap):
                await events_topic.wait_for_all({event["event_id"] for event in events})
                await events_topic.read_stragglers()

            # Having heard the bus (no rollout for the region yet), the edge is no longer stale.
            await eventually(lambda: not models_of(edge).stale, "the edge is not stale")
            ready = await http.get("/readyz")
            body = ready.json()
            assert {key: body[key] for key in ("ready", "version", "stale")} == {
                "ready": True, "version": TRAINED_VERSION, "stale": False,
            }  # fmt: skip
            assert body["catalog"]["loaded"] is True

        report("edge started with NATS down", tally, events_topic)
        assert_exactly_once_after_dedupe(events_topic, expected_regions(traffic))
        assert publisher_of(edge).status.pending_records == 0
    finally:
        nats_server.close()
