"""Writing small lakes of hand-made events for the outcome tests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from central.lake.layout import LakeLayout, event_date, open_lake
from central.lake.names import commit_part
from central.lake.tables import table_from_columns
from protocol.events import Event


def write_lake(root: Path, events: list[Event]) -> LakeLayout:
    """``events`` as one committed import file a day under ``root``."""
    layout = open_lake(root, create=True)
    by_day: dict[str, list[Event]] = {}
    for event in events:
        by_day.setdefault(event_date(event.ts), []).append(event)
    offset = 0
    for date, day_events in sorted(by_day.items()):
        columns: dict[str, list[object]] = {name: [] for name in _COLUMNS}
        for event in day_events:
            for name in _COLUMNS:
                value = getattr(event, name)
                if name == "context" and value is not None:
                    value = json.dumps(dict(value))
                if name == "items" and value is not None:
                    value = list(value)
                columns[name].append(value)
        first = offset
        offset += len(day_events)
        columns["kafka_partition"] = [-1] * len(day_events)
        columns["kafka_offset"] = list(range(first, offset))
        table = table_from_columns(columns, len(day_events))
        directory = layout.day(date)
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, directory / commit_part(-1, first, offset - 1, 1, 1).file_name)
    return layout


_COLUMNS = (
    "event_id", "session_id", "type", "ts", "user_id", "item_id", "items", "request_id",
    "query", "category", "price", "context", "received_at", "region", "node",
)  # fmt: skip
