from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import nats
import pytest
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from edge_node.uplink import Uplink, UplinkConfig, UplinkUnavailableError
from edge_node.uplink.publisher import EventPublisher
from protocol.codec import decode_msgpack_event, encode_msgpack
from protocol.events import Event
from protocol.subjects import DUPLICATE_WINDOW_S, EVENTS_STREAM, MSG_ID_HEADER, events_subject
from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.service import ServiceStateError
from runtime.supervisor import BusSupervisor
from tests.servers import NatsServer, NatsServerFactory
from tests.streams import TEST_LIMITS, make_events_stream
from tests.support import eventually

REGION = "test-region"
LIVENESS_TIMEOUT_S = 60.0  # a bound on waiting for something that must happen, not a timing

BusFactory = Callable[[str], Awaitable[BusSupervisor]]


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    msg_id: str | None


def make_event(tag: str, n: int) -> bytes:
    return encode_msgpack(Event(
        event_id=f"{tag}-{n:08d}", session_id=f"session-{n % 7}", type="click",
        ts=1_732_000_000_000 + n, item_id=f"item-{n % 101}", received_at=1_732_000_000_100 + n,
        region=REGION, node="edge-1",
    ))


def event_ids(tag: str, numbers: range) -> list[str]:
    return [f"{tag}-{n:08d}" for n in numbers]


def unique_node() -> str:
    return f"node-{uuid.uuid4().hex[:12]}"


async def stored_events(url: str, subject: str) -> list[StoredEvent]:
    """Every message of ``subject`` in the EVENTS stream, in stream order."""
    client = await nats.connect(url)
    try:
        jetstream = client.jetstream()
        stored: list[StoredEvent] = []
        seq = 1
        while True:
            try:
                message = await jetstream.get_msg(EVENTS_STREAM, seq, subject=subject, next=True)
            except NotFoundError:
                return stored
            headers = message.headers or {}
            event = decode_msgpack_event(message.data or b"")
            stored.append(StoredEvent(event.event_id, headers.get(MSG_ID_HEADER)))
            assert message.seq is not None
            seq = message.seq + 1
    finally:
        await client.close()


def publisher_for(
    uplink: Uplink,
    bus: BusSupervisor,
    node: str,
    *,
    batch: int = 256,
    ack_timeout_s: float = 5.0,
) -> EventPublisher:
    return EventPublisher(
        uplink, bus, region=REGION, node=node, batch=batch, ack_timeout_s=ack_timeout_s,
        max_backoff_s=0.5,
    )


async def submit_in_batches(uplink: Uplink, tag: str, numbers: range, batch: int = 50) -> None:
    events = [make_event(tag, n) for n in numbers]
    for start in range(0, len(events), batch):
        await uplink.submit(events[start : start + batch])


@pytest.fixture
async def uplink(tmp_path: Path) -> AsyncIterator[Uplink]:
    async with Uplink(UplinkConfig(tmp_path / "spool", fsync="always")) as started:
        yield started


@pytest.fixture
async def bus() -> AsyncIterator[BusFactory]:
    """Starts the process's one NATS connection for a URL, as the edge app does."""
    started: list[BusSupervisor] = []

    async def start(url: str) -> BusSupervisor:
        settings = NatsSettings(
            servers=(url,), name="publisher-test", connect_timeout_s=1.0, reconnect_wait_s=0.1
        )
        supervisor = BusSupervisor(settings, backoff=Backoff(0.05, 0.5))
        await supervisor.start()
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in reversed(started):
        await supervisor.close(5.0)


async def test_events_reach_the_stream_in_order_once_each(
    uplink: Uplink, nats_url: str, bus: BusFactory
) -> None:
    node = unique_node()
    await submit_in_batches(uplink, "order", range(600))
    publisher = publisher_for(uplink, await bus(nats_url), node, batch=64)
    await publisher.start()
    try:
        await submit_in_batches(uplink, "order", range(600, 1000), batch=7)
        await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
    finally:
        await publisher.close(timeout_s=5.0)

    stored = await stored_events(nats_url, events_subject(REGION, node))
    assert [event.event_id for event in stored] == event_ids("order", range(1000))
    assert all(event.msg_id == event.event_id for event in stored)
    status = publisher.status
    assert (status.published, status.duplicates, status.skipped_records) == (1000, 0, 0)
    assert status.pending_records == status.pending_bytes == 0
    assert uplink.spool.committed_seq == 1000


async def test_events_wait_in_the_spool_until_nats_comes_up(
    uplink: Uplink, tmp_path: Path, bus: BusFactory
) -> None:
    server = NatsServer(tmp_path / "late-nats")  # its URL is known before it runs
    url = server.url
    try:
        await submit_in_batches(uplink, "late", range(300))
        publisher = publisher_for(uplink, await bus(url), "edge-late")
        await publisher.start()
        try:
            await submit_in_batches(uplink, "late", range(300, 400))
            status = publisher.status
            assert not status.connected
            assert status.pending_records == 400
            await asyncio.to_thread(server.start)
            assert server.url == url, "the port was taken meanwhile"
            await make_events_stream(url)
            await eventually(
                lambda: publisher.status.pending_records == 0,
                "the spool drained",
                timeout_s=LIVENESS_TIMEOUT_S,
            )
            assert publisher.status.connected
        finally:
            await publisher.close(timeout_s=5.0)
        stored = await stored_events(url, events_subject(REGION, "edge-late"))
        assert [event.event_id for event in stored] == event_ids("late", range(400))
    finally:
        server.close()


async def test_nats_killed_and_restarted_mid_stream_loses_and_repeats_nothing(
    uplink: Uplink, nats_server_factory: NatsServerFactory, bus: BusFactory
) -> None:
    server = nats_server_factory()
    await make_events_stream(server.url)
    total = 3000
    publisher = publisher_for(
        uplink, await bus(server.url), "edge-crash", batch=128, ack_timeout_s=2.0
    )
    await publisher.start()

    async def keep_submitting() -> None:
        for start in range(0, total, 20):
            await submit_in_batches(uplink, "crash", range(start, start + 20))
            await asyncio.sleep(0.002)

    submitter = asyncio.create_task(keep_submitting())
    try:
        await eventually(lambda: publisher.status.published >= 500, "500 events published")
        await asyncio.to_thread(server.kill)
        submitted_at_kill = uplink.counters.events_submitted
        await eventually(
            lambda: uplink.counters.events_submitted >= min(total, submitted_at_kill + 400)
            or submitter.done(),
            "events submitted while NATS is down",
        )
        await asyncio.to_thread(server.start)
        await submitter
        await eventually(
            lambda: publisher.status.pending_records == 0,
            "the spool drained",
            timeout_s=LIVENESS_TIMEOUT_S,
        )
        assert publisher.status.reconnects >= 1
    finally:
        submitter.cancel()
        await publisher.close(timeout_s=5.0)

    stored = await stored_events(server.url, events_subject(REGION, "edge-crash"))
    # each exactly once, in order: the batch cut off by the crash is sent again whole on a
    # new connection, and JetStream drops what it already had by Nats-Msg-Id
    assert [event.event_id for event in stored] == event_ids("crash", range(total))
    assert all(event.msg_id == event.event_id for event in stored)


async def test_a_stalled_server_is_left_and_nothing_is_lost_or_repeated(
    uplink: Uplink, nats_server_factory: NatsServerFactory, bus: BusFactory
) -> None:
    server = nats_server_factory()
    await make_events_stream(server.url)
    assert server.pid is not None
    publisher = publisher_for(
        uplink, await bus(server.url), "edge-stall", batch=64, ack_timeout_s=0.5
    )
    await publisher.start()
    try:
        await submit_in_batches(uplink, "stall", range(300))
        await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
        os.kill(server.pid, signal.SIGSTOP)  # like a network partition: no error, no answer
        try:
            await submit_in_batches(uplink, "stall", range(300, 600))
            await eventually(
                lambda: publisher.status.publish_errors >= 1 and not publisher.status.connected,
                "the stalled connection was left",
            )
        finally:
            os.kill(server.pid, signal.SIGCONT)
        await submit_in_batches(uplink, "stall", range(600, 700))
        await eventually(
            lambda: publisher.status.pending_records == 0,
            "the spool drained",
            timeout_s=LIVENESS_TIMEOUT_S,
        )
        assert publisher.status.reconnects >= 1
    finally:
        await publisher.close(timeout_s=5.0)
    stored = await stored_events(server.url, events_subject(REGION, "edge-stall"))
    assert sorted(event.event_id for event in stored) == event_ids("stall", range(700))


async def test_an_edge_never_makes_the_stream_its_events_wait_for_central(
    uplink: Uplink,
    nats_server_factory: NatsServerFactory,
    bus: BusFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = nats_server_factory()
    await submit_in_batches(uplink, "central", range(100))
    publisher = publisher_for(uplink, await bus(server.url), "edge-central")
    with caplog.at_level(logging.ERROR, "proxima.edge.publisher"):
        await publisher.start()
        try:
            await eventually(lambda: publisher.status.publish_errors >= 2, "publishes refused")
            assert publisher.status.stream_missing
            assert publisher.status.pending_records == 100
            client = await nats.connect(server.url)
            try:
                with pytest.raises(NotFoundError):  # the edge did not make it
                    await client.jetstream().stream_info(EVENTS_STREAM)
            finally:
                await client.close()
            info = await make_events_stream(server.url)  # as central does
            await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
            assert not publisher.status.stream_missing
        finally:
            await publisher.close(timeout_s=5.0)
    missing = [r for r in caplog.records if "has no EVENTS stream" in r.getMessage()]
    assert len(missing) == 1  # said once, not once a retry
    assert info.config.num_replicas == 1 and info.config.max_bytes == TEST_LIMITS.max_bytes
    stored = await stored_events(server.url, events_subject(REGION, "edge-central"))
    assert [event.event_id for event in stored] == event_ids("central", range(100))


async def test_a_new_publisher_continues_after_the_committed_cursor(
    tmp_path: Path, nats_url: str, bus: BusFactory
) -> None:
    node = unique_node()
    config = UplinkConfig(tmp_path / "spool", fsync="always")
    async with Uplink(config) as first_uplink:
        await submit_in_batches(first_uplink, "again", range(500))
        first = publisher_for(first_uplink, await bus(nats_url), node, batch=100)
        await first.start()
        await eventually(lambda: first.status.pending_records == 0, "the spool drained")
        await first.close(timeout_s=5.0)
        await submit_in_batches(first_uplink, "again", range(500, 600))

    async with Uplink(config) as second_uplink:
        await submit_in_batches(second_uplink, "again", range(600, 800))
        assert second_uplink.spool.pending_records == 300
        second = publisher_for(second_uplink, await bus(nats_url), node, batch=100)
        await second.start()
        try:
            await eventually(lambda: second.status.pending_records == 0, "the spool drained")
        finally:
            await second.close(timeout_s=5.0)
        assert second.status.published == 300

    stored = await stored_events(nats_url, events_subject(REGION, node))
    assert [event.event_id for event in stored] == event_ids("again", range(800))


async def test_a_record_that_is_no_event_is_skipped_and_counted(
    uplink: Uplink, nats_url: str, bus: BusFactory
) -> None:
    node = unique_node()
    not_msgpack = b"\xc1 not msgpack"
    not_an_event = msgpack.packb({"event_id": "bad"})
    await uplink.submit([make_event("skip", n) for n in range(5)])
    await uplink.submit([not_msgpack, *(make_event("skip", n) for n in range(5, 8))])
    await uplink.submit([not_an_event, *(make_event("skip", n) for n in range(8, 10))])
    publisher = publisher_for(uplink, await bus(nats_url), node, batch=4)
    await publisher.start()
    try:
        await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
    finally:
        await publisher.close(timeout_s=5.0)
    stored = await stored_events(nats_url, events_subject(REGION, node))
    assert [event.event_id for event in stored] == event_ids("skip", range(10))
    assert (publisher.status.skipped_records, publisher.status.published) == (2, 10)


async def test_close_with_nats_down_leaves_the_records_for_the_next_start(
    uplink: Uplink, nats_server_factory: NatsServerFactory, bus: BusFactory
) -> None:
    server = nats_server_factory()
    await make_events_stream(server.url)
    connection = await bus(server.url)
    publisher = publisher_for(uplink, connection, "edge-down", batch=50, ack_timeout_s=2.0)
    await publisher.start()
    await submit_in_batches(uplink, "down", range(200))
    await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
    await asyncio.to_thread(server.kill)
    await submit_in_batches(uplink, "down", range(200, 500))
    await asyncio.wait_for(publisher.close(timeout_s=1.0), LIVENESS_TIMEOUT_S)
    assert uplink.spool.pending_records == 300
    assert publisher.status.published == 200

    await asyncio.to_thread(server.start)
    successor = publisher_for(uplink, connection, "edge-down", batch=50)  # the same process
    await successor.start()
    try:
        await eventually(
            lambda: successor.status.pending_records == 0,
            "the spool drained",
            timeout_s=LIVENESS_TIMEOUT_S,
        )
    finally:
        await successor.close(timeout_s=5.0)
    stored = await stored_events(server.url, events_subject(REGION, "edge-down"))
    assert [event.event_id for event in stored] == event_ids("down", range(500))


async def test_close_returns_when_nats_never_answered(
    uplink: Uplink, tmp_path: Path, bus: BusFactory
) -> None:
    never_started = NatsServer(tmp_path / "never")
    publisher = publisher_for(uplink, await bus(never_started.url), "edge-never")
    await publisher.start()
    await submit_in_batches(uplink, "never", range(50))
    await asyncio.wait_for(publisher.close(timeout_s=0.5), LIVENESS_TIMEOUT_S)
    status = publisher.status
    assert (status.connected, status.published, status.pending_records) == (False, 0, 50)
    assert status.last_error is not None


async def test_an_existing_stream_is_left_as_central_made_it(
    uplink: Uplink, nats_server_factory: NatsServerFactory, bus: BusFactory
) -> None:
    server = nats_server_factory()
    client = await nats.connect(server.url)
    try:
        jetstream = client.jetstream()
        await jetstream.add_stream(StreamConfig(
            name=EVENTS_STREAM, subjects=["events.>"], storage=StorageType.MEMORY,
            duplicate_window=DUPLICATE_WINDOW_S * 2, max_msgs=10_000,
        ))
        await submit_in_batches(uplink, "kept", range(20))
        publisher = publisher_for(uplink, await bus(server.url), "edge-kept")
        await publisher.start()
        try:
            await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
        finally:
            await publisher.close(timeout_s=5.0)
        config = (await jetstream.stream_info(EVENTS_STREAM)).config
        assert (config.storage, config.max_msgs) == (StorageType.MEMORY, 10_000)
        assert config.duplicate_window == DUPLICATE_WINDOW_S * 2
    finally:
        await client.close()


async def test_start_needs_a_started_uplink_and_happens_once(
    tmp_path: Path, nats_url: str, bus: BusFactory
) -> None:
    uplink = Uplink(UplinkConfig(tmp_path / "spool"))
    with pytest.raises(UplinkUnavailableError):
        await publisher_for(uplink, await bus(nats_url), unique_node()).start()
    async with uplink:
        publisher = publisher_for(uplink, await bus(nats_url), unique_node())
        await publisher.start()
        try:
            with pytest.raises(ServiceStateError):
                await publisher.start()
        finally:
            await asyncio.gather(publisher.close(timeout_s=5.0), publisher.close(timeout_s=5.0))
        await publisher.close(timeout_s=5.0)
        with pytest.raises(ServiceStateError):
            await publisher.start()



async def test_status_and_logs_never_show_the_nats_credentials(
    uplink: Uplink, nats_server: NatsServer, bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxima")
    password = "s3cretPW"
    with_password = nats_server.url.replace("nats://", f"nats://edge:{password}@")
    await make_events_stream(nats_server.url)
    await submit_in_batches(uplink, "secret", range(10))
    publisher = publisher_for(uplink, await bus(with_password), "edge-secret")
    await publisher.start()
    try:
        await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
        assert publisher.status.connected
    finally:
        await publisher.close(timeout_s=5.0)
    assert f"127.0.0.1:{nats_server.port}" in caplog.text  # where it connected, and no more
    assert password not in caplog.text
    assert password not in repr(publisher.status)
