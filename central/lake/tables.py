"""Arrow tables of lake rows: built from columns, written as Parquet, read back checked.

Every file carries, besides the schema version, where its rows came from under
:data:`SOURCE_KEY` (topic, Kafka partition, first and last offset of its commit), so the
offsets a file covers are in the file itself as well as in its name. Reading a file
checks its schema version (:class:`~central.lake.errors.LakeSchemaError`) and turns a torn
or unreadable file into :class:`~central.lake.errors.LakeCorruptError`, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from central.lake.errors import LakeCorruptError
from central.lake.schema import SCHEMA, check_schema
from protocol.events import EVENT_TYPES

SOURCE_KEY: Final = b"proxima.lake.source"
COMPRESSION: Final = "zstd"
ROW_GROUP_ROWS: Final = 256 * 1024
# Columns whose values repeat. Dictionary-encoding the unique ones (event ids, offsets)
# only to fall back to plain encoding costs about half of a file's write time.
DICTIONARY_COLUMNS: Final = (
    "session_id", "type", "user_id", "item_id", "request_id", "query", "category", "region",
    "node", "kafka_partition",
)  # fmt: skip
EVENT_TYPE_VALUES: Final = pa.array(EVENT_TYPES, pa.string())


@dataclass(frozen=True, slots=True)
class Source:
    topic: str  # "" for an import
    partition: int
    first_offset: int
    last_offset: int

    def encoded(self) -> bytes:
        return json.dumps(
            {
                "topic": self.topic,
                "partition": self.partition,
                "first_offset": self.first_offset,
                "last_offset": self.last_offset,
            }
        ).encode()


def event_types(codes: pa.Array) -> pa.DictionaryArray:
    """The ``type`` column from int8 codes into :data:`protocol.events.EVENT_TYPES`."""
    return pa.DictionaryArray.from_arrays(codes.cast(pa.int8()), EVENT_TYPE_VALUES)


def table_from_columns(columns: dict[str, Any], rows: int) -> pa.Table:
    """A table of the lake schema; a column left out is all null (it must be nullable)."""
    arrays: list[pa.Array] = []
    for lake_field in SCHEMA:
        value = columns.get(lake_field.name)
        if value is None:
            arrays.append(pa.nulls(rows, lake_field.type))
        elif isinstance(value, pa.Array | pa.ChunkedArray):
            arrays.append(value if value.type == lake_field.type else value.cast(lake_field.type))
        else:
            arrays.append(pa.array(value, lake_field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def with_source(table: pa.Table, source: Source) -> pa.Table:
    metadata = dict(SCHEMA.metadata)
    metadata[SOURCE_KEY] = source.encoded()
    return table.replace_schema_metadata(metadata)


def to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS,
        write_statistics=True, use_dictionary=list(DICTIONARY_COLUMNS),
    )  # fmt: skip
    return bytes(sink.getvalue())


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        path, schema, compression=COMPRESSION, write_statistics=True,
        use_dictionary=list(DICTIONARY_COLUMNS),
    )  # fmt: skip


def open_checked(path: Path) -> pq.ParquetFile:
    """The file, its schema checked; LakeCorruptError when it cannot be read as Parquet."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LakeCorruptError(f"{path}: not a readable Parquet file ({exc})") from exc
    check_schema(parquet.schema_arrow, source=str(path))
    return parquet


def read_checked(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    parquet = open_checked(path)
    try:
        table = parquet.read(columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError) as exc:
        raise LakeCorruptError(f"{path}: torn or unreadable Parquet file ({exc})") from exc
    return table


def source_of(path: Path) -> Source | None:
    metadata = open_checked(path).schema_arrow.metadata or {}
    raw = metadata.get(SOURCE_KEY)
    if raw is None:
        return None
    try:
        decoded = json.loads(raw)
        return Source(
            str(decoded["topic"]), int(decoded["partition"]),
            int(decoded["first_offset"]), int(decoded["last_offset"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise LakeCorruptError(f"{path}: unreadable source metadata ({exc})") from exc


def check_files(paths: Sequence[Path]) -> None:
    """Opens every file's footer: the first of another version or torn raises, naming it."""
    for path in paths:
        open_checked(path)
