"""Events for the lake writer's tests: made, produced to a fresh topic, read back."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from central.lake.layout import open_lake
from central.lake.tables import read_checked
from protocol.codec import encode_msgpack
from protocol.events import Event

DAY_MS = 86_400_000
BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_events(count: int, *, days: int = 3, start: int = 0) -> list[Event]:
    """Distinct events spread over ``days`` days, some with every optional field."""
    events = []
    for n in range(start, start + count):
        rich = n % 7 == 0
        events.append(
            Event(
                event_id=f"ev-{n:08d}",
                session_id=f"s{n % 97}",
                type="impression" if rich else "view",
                ts=BASE_TS + (n % days) * DAY_MS + n,
                user_id=f"u{n % 13}" if rich else None,
                item_id=None if rich else f"i{n % 50}",
                items=("i1", "i2") if rich else None,
                request_id="r1" if rich else None,
                category="shoes" if n % 3 == 0 else None,
                price=9.5 if n % 5 == 0 else None,
                context={"page": "home", "n": n} if rich else None,
                received_at=BASE_TS + n if rich else None,
                region="eu" if rich else None,
                node="edge-1" if rich else None,
            )
        )
    return events


async def fresh_topic(bootstrap: str, partitions: int) -> str:
    topic = f"lake-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key)
            for value, key in zip(values, keys, strict=True)
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


def encoded(events: list[Event]) -> tuple[list[bytes], list[bytes]]:
    return [encode_msgpack(e) for e in events], [e.session_id.encode() for e in events]


def lake_table(root: Path) -> pa.Table:
    layout = open_lake(root)
    tables = [read_checked(path) for path in layout.data_files()]
    return pa.concat_tables(tables) if tables else pa.table({"event_id": pa.array([], pa.string())})


def event_id_counts(root: Path) -> Counter[str]:
    if not root.exists():
        return Counter()
    return Counter(lake_table(root).column("event_id").to_pylist())
