"""The lake writer against a real Kafka-protocol broker: every event once, by day."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from central.lake.layout import event_date, open_lake
from central.lake.names import parse_name
from central.lake.writer import LakeWriter
from central.settings import LakeWriterSettings
from tests.central.lake.streams import (
    encoded,
    event_id_counts,
    fresh_topic,
    lake_table,
    make_events,
    produce,
)
from tests.support import eventually

pytestmark = pytest.mark.integration
EVENTUALLY_S = 60.0  # a guard against hanging, never a measure of speed


def settings(bootstrap: str, topic: str, lake: Path, **extra: object) -> LakeWriterSettings:
    values: dict[str, object] = {"group_id": f"{topic}-writers", "roll_interval_s": 0.2}
    values.update(extra)
    return LakeWriterSettings(
        kafka_bootstrap=bootstrap,
        topic=topic,
        lake_dir=lake,
        **values,  # type: ignore[arg-type]
    )


async def test_every_event_lands_once_in_its_day(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = await fresh_topic(kafka_bootstrap, partitions=3)
    events = make_events(900, days=3)
    values, keys = encoded(events)
    values.insert(100, b"\xc1 not msgpack")
    keys.insert(100, b"s1")
    values.insert(500, b"\x81\xa4type\xa4view")  # msgpack, but not an event
    keys.insert(500, b"s2")
    await produce(kafka_bootstrap, topic, values, keys)
    lake = tmp_path / "lake"
    writer = LakeWriter(settings(kafka_bootstrap, topic, lake))
    await writer.start()
    try:
        await eventually(
            lambda: sum(event_id_counts(lake).values()) >= len(events),
            "every event in the lake",
            timeout_s=EVENTUALLY_S,
        )
    finally:
        await writer.close()
    counts = event_id_counts(lake)
    assert set(counts) == {e.event_id for e in events}
    assert set(counts.values()) == {1}
    assert writer.status.invalid == 2
    table = lake_table(lake)
    by_id = {row["event_id"]: row for row in table.to_pylist()}
    for event in events:
        row = by_id[event.event_id]
        assert row["session_id"] == event.session_id
        assert row["type"] == event.type
        assert row["ts"] == event.ts
        assert row["items"] == (list(event.items) if event.items else None)
        assert row["price"] == event.price
        assert (row["context"] is None) == (event.context is None)
    layout = open_lake(lake)
    for path in layout.data_files():
        name = parse_name(path.name)
        assert name is not None and 0 <= name.partition < 3
        rows = lake_table_rows(path)
        assert all(event_date(ts) == path.parent.name.removeprefix("date=") for ts in rows)


def lake_table_rows(path: Path) -> list[int]:
    from central.lake.tables import read_checked

    return [int(ts) for ts in read_checked(path, ["ts"]).column("ts").to_pylist()]


async def test_a_restarted_writer_goes_on_where_the_lake_ends(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = await fresh_topic(kafka_bootstrap, partitions=2)
    lake = tmp_path / "lake"
    first, second = make_events(300), make_events(300, start=300)
    await produce(kafka_bootstrap, topic, *encoded(first))
    writer = LakeWriter(settings(kafka_bootstrap, topic, lake))
    await writer.start()
    await eventually(lambda: sum(event_id_counts(lake).values()) >= 300, "the first part",
                     timeout_s=EVENTUALLY_S)  # fmt: skip
    await writer.close()
    await produce(kafka_bootstrap, topic, *encoded(second))
    # The group's offsets are a hint only: a new group still resumes where the lake ends.
    again = LakeWriter(settings(kafka_bootstrap, topic, lake, group_id=f"{topic}-other"))
    await again.start()
    try:
        await eventually(lambda: sum(event_id_counts(lake).values()) >= 600, "the second part",
                         timeout_s=EVENTUALLY_S)  # fmt: skip
        await asyncio.sleep(0.5)
    finally:
        await again.close()
    counts = event_id_counts(lake)
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert again.status.duplicates == 0


async def test_writers_in_one_group_share_the_partitions_and_hand_them_over(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = await fresh_topic(kafka_bootstrap, partitions=4)
    lake = tmp_path / "lake"
    first, second = make_events(400), make_events(400, start=400)
    one = LakeWriter(settings(kafka_bootstrap, topic, lake, session_timeout_s=3.0))
    other = LakeWriter(settings(kafka_bootstrap, topic, lake, session_timeout_s=3.0))
    await one.start()
    await other.start()
    try:
        await produce(kafka_bootstrap, topic, *encoded(first))
        await eventually(lambda: sum(event_id_counts(lake).values()) >= 400, "the first part",
                         timeout_s=EVENTUALLY_S)  # fmt: skip
        assert one.status.written > 0 and other.status.written > 0  # both had partitions
        await other.close()  # its partitions go to the one left, which resumes from the lake
        await produce(kafka_bootstrap, topic, *encoded(second))
        await eventually(lambda: sum(event_id_counts(lake).values()) >= 800, "the second part",
                         timeout_s=EVENTUALLY_S)  # fmt: skip
        await asyncio.sleep(0.5)
    finally:
        await other.close()
        await one.close()
    counts = event_id_counts(lake)
    assert len(counts) == 800 and set(counts.values()) == {1}
