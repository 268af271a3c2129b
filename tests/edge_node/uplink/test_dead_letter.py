"""A record JetStream refuses for good goes to the dead-letter file; the spool goes on."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from edge_node.uplink import Uplink, UplinkConfig
from edge_node.uplink.deadletter import DEAD_LETTER_NAME, DeadLetters
from protocol.codec import encode_msgpack
from protocol.events import Event
from protocol.subjects import DUPLICATE_WINDOW_S, EVENTS_STREAM, events_subject
from tests.edge_node.uplink.test_publisher import (
    REGION,
    BusFactory,
    bus,  # noqa: F401  (a fixture)
    event_ids,
    make_event,
    publisher_for,
    stored_events,
)
from tests.servers import NatsServerFactory
from tests.support import eventually

MAX_MSG_SIZE = 400


def poisoned(n: int) -> bytes:
    """A valid event, too large for a stream that takes messages of MAX_MSG_SIZE bytes."""
    return encode_msgpack(
        Event(
            event_id=f"poison-{n:08d}", session_id="session-1", type="impression",
            ts=1_732_000_000_000, items=tuple(f"item-{i:04d}" for i in range(60)),
            received_at=1_732_000_000_100, region=REGION, node="edge-1",
        )
    )  # fmt: skip


async def test_a_record_too_large_for_the_stream_is_quarantined_and_the_rest_go_on(
    tmp_path: Path, nats_server_factory: NatsServerFactory, bus: BusFactory  # noqa: F811
) -> None:
    server = nats_server_factory()
    client = await nats.connect(server.url)
    try:
        await client.jetstream().add_stream(
            StreamConfig(
                name=EVENTS_STREAM, subjects=["events.>"], storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S, max_msg_size=MAX_MSG_SIZE,
            )
        )  # fmt: skip
    finally:
        await client.close()
    spool_dir = tmp_path / "spool"
    bad = poisoned(7)
    assert len(bad) > MAX_MSG_SIZE > len(make_event("ok", 0))
    async with Uplink(UplinkConfig(spool_dir, fsync="always")) as uplink:
        await uplink.submit([make_event("ok", n) for n in range(7)])
        await uplink.submit([bad])
        await uplink.submit([make_event("ok", n) for n in range(7, 20)])
        publisher = publisher_for(uplink, await bus(server.url), "edge-poison", batch=8)
        await publisher.start()
        try:
            await eventually(lambda: publisher.status.pending_records == 0, "the spool drained")
            status = publisher.status
        finally:
            await publisher.close(timeout_s=5.0)
    assert status.dead_lettered == 1
    assert status.published == 20
    stored = await stored_events(server.url, events_subject(REGION, "edge-poison"))
    assert [event.event_id for event in stored] == event_ids("ok", range(20))
    (line,) = (spool_dir / DEAD_LETTER_NAME).read_text().splitlines()
    entry = json.loads(line)
    assert entry["event_id"] == "poison-00000007"
    assert base64.b64decode(entry["record"]) == bad
    assert "10054" in entry["reason"] or "size" in entry["reason"]


def test_the_dead_letter_file_is_bounded_and_what_it_cannot_hold_is_counted(
    tmp_path: Path,
) -> None:
    letters = DeadLetters(tmp_path, max_bytes=1_000)
    for seq in range(1, 11):
        letters.put(seq, f"event-{seq:08d}", b"x" * 200, "refused")
    assert letters.written >= 1 and letters.dropped >= 1
    assert letters.written + letters.dropped == letters.quarantined == 10
    assert (tmp_path / DEAD_LETTER_NAME).stat().st_size <= 1_000
