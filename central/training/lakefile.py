"""An in-memory :class:`~central.eventlog.EventLog` into a lake and back, for small logs.

``proxima evaluate`` trains on the training side of its split through an engine by
writing it into a temporary lake; tests build lakes from the shared logs the same way
and read one back to compare an engine's tables with the in-memory builder's. Event
ids are the log's keys, zero-padded, so the lake's order (time, then event id) is the
in-memory trainer's (time, then key). Large logs go in with ``proxima lake import``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from central.datasets import read_log
from central.eventlog import EventLog, build_log
from central.lake.layout import event_date, open_lake
from central.lake.schema import SCHEMA, check_schema
from protocol.events import EVENT_TYPE_CODES, EVENT_TYPES

DAY_MS: Final = 86_400_000
FILE_NAME: Final = "log-00000.parquet"


def import_into_lake(
    data: Path, fmt: str, root: Path | str, *, skip_bad_rows: bool
) -> tuple[int, int]:
    """Writes the log file ``data`` into the lake ``root``; returns rows skipped and read.

    Through :func:`central.lake.importer.import_log` (chunk by chunk, bounded memory) where
    it is installed; otherwise the log is read whole and written by :func:`log_to_lake`.
    """
    try:
        from central.lake.importer import import_log
    except ImportError:
        log, stats = read_log(data, fmt, skip_bad_rows=skip_bad_rows)  # type: ignore[arg-type]
        log_to_lake(log, root)
        return stats.rows_skipped, stats.rows_read
    result = import_log(data, fmt, Path(root), skip_bad_rows=skip_bad_rows)  # type: ignore[arg-type]
    return int(result.rows_skipped), int(result.rows_skipped + result.events)


def event_id_of(key: int) -> str:
    return f"log-{key:012d}"


def log_to_lake(log: EventLog, root: Path | str) -> int:
    """Writes every event of ``log`` under the lake ``root`` (one file a day); returns files."""
    layout = open_lake(root, create=True)
    if log.n_events == 0:
        return 0
    days = log.ts // DAY_MS
    order = np.argsort(days, kind="stable")
    starts = np.flatnonzero(np.r_[True, days[order][1:] != days[order][:-1]])
    bounds = np.r_[starts, order.shape[0]]
    for start, stop in itertools.pairwise(bounds):
        rows = order[start:stop]
        directory = layout.day(event_date(int(log.ts[rows[0]])))
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{FILE_NAME}.tmp"
        pq.write_table(_table(log, rows), temporary)
        temporary.replace(directory / FILE_NAME)
    return int(bounds.shape[0] - 1)


def _table(log: EventLog, rows: np.ndarray) -> pa.Table:
    n = rows.shape[0]
    category = log.category[rows]
    names = np.asarray([*log.categories, ""], dtype=object)[category]
    price = log.price[rows].astype(np.float64)
    nulls = [None] * n
    columns = {
        "event_id": pa.array([event_id_of(int(key)) for key in log.key[rows]], pa.string()),
        "session_id": pa.array(np.asarray(log.session_ids, dtype=object)[log.session[rows]]),
        "type": pa.DictionaryArray.from_arrays(
            pa.array(log.event_type[rows], pa.int8()), pa.array(list(EVENT_TYPES))
        ),
        "ts": pa.array(log.ts[rows], pa.int64()),
        "user_id": pa.array(nulls, pa.string()),
        "item_id": pa.array(np.asarray(log.item_ids, dtype=object)[log.item[rows]]),
        "items": pa.array(nulls, pa.list_(pa.string())),
        "request_id": pa.array(nulls, pa.string()),
        "query": pa.array(nulls, pa.string()),
        "category": pa.array(names, pa.string(), mask=category < 0),
        "price": pa.array(price, pa.float64(), mask=np.isnan(price)),
        "context": pa.array(nulls, pa.string()),
        "received_at": pa.array(nulls, pa.int64()),
        "region": pa.array(nulls, pa.string()),
        "node": pa.array(nulls, pa.string()),
        "kafka_partition": pa.array(np.full(n, -1), pa.int32()),
        "kafka_offset": pa.array(np.full(n, -1), pa.int64()),
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def lake_to_log(root: Path | str) -> EventLog:
    """Every item event of the lake at ``root`` as the in-memory trainer reads a log
    (:func:`central.trainer.eventstore.trainer_log`'s order); for small lakes only."""
    layout = open_lake(root)
    tables = []
    for path in layout.data_files():
        table = pq.read_table(path)
        check_schema(table.schema, source=str(path))
        tables.append(
            table.select(["event_id", "session_id", "type", "ts", "item_id", "category", "price"])
        )
    table = pa.concat_tables(tables).combine_chunks() if tables else SCHEMA.empty_table()
    types = pc.cast(table.column("type"), pa.string()).to_pylist()
    item_types = {"view", "click", "add_to_cart", "remove_from_cart", "purchase"}
    keep = [
        t in item_types and item is not None
        for t, item in zip(types, table.column("item_id").to_pylist(), strict=True)
    ]
    table = table.filter(pa.array(keep, pa.bool_()))
    table = table.sort_by([("ts", "ascending"), ("event_id", "ascending")])
    built = build_log(
        [str(s) for s in table.column("session_id").to_pylist()],
        [str(i) for i in table.column("item_id").to_pylist()],
        table.column("ts").to_pylist(),
        [EVENT_TYPE_CODES[t] for t in pc.cast(table.column("type"), pa.string()).to_pylist()],
        table.column("category").to_pylist(),
        table.column("price").to_pylist(),
    )
    return built
