"""The lake's Parquet schema: the event contract of DESIGN §1, one column a field.

Every file carries its schema version in the Parquet key-value metadata under
:data:`VERSION_KEY`; a reader refuses a file of another version by name rather than
reading columns it does not understand. ``kafka_partition`` and ``kafka_offset`` say
where a row came from (``-1`` for rows imported from a file), so a row is never written
twice for one offset.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from central.lake.errors import LakeSchemaError

SCHEMA_VERSION: Final = 1
VERSION_KEY: Final = b"proxima.lake.schema_version"

EVENT_FIELDS: Final = (
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("session_id", pa.string(), nullable=False),
    pa.field("type", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    pa.field("ts", pa.int64(), nullable=False),
    pa.field("user_id", pa.string()),
    pa.field("item_id", pa.string()),
    pa.field("items", pa.list_(pa.string())),
    pa.field("request_id", pa.string()),
    pa.field("query", pa.string()),
    pa.field("category", pa.string()),
    pa.field("price", pa.float64()),
    # The free-form context object, as compact JSON: its keys differ from shop to shop.
    pa.field("context", pa.string()),
    pa.field("received_at", pa.int64()),
    pa.field("region", pa.string()),
    pa.field("node", pa.string()),
)
SOURCE_FIELDS: Final = (
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
)

SCHEMA: Final = pa.schema(
    [*EVENT_FIELDS, *SOURCE_FIELDS],
    metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
)
COLUMN_NAMES: Final = tuple(field.name for field in SCHEMA)


def check_schema(schema: pa.Schema, *, source: str) -> None:
    """Raises :class:`LakeSchemaError` naming ``source`` unless ``schema`` is this version's."""
    metadata = schema.metadata or {}
    found = metadata.get(VERSION_KEY)
    if found is None:
        raise LakeSchemaError(f"{source}: not a Proxima lake file (no schema version)")
    if found != str(SCHEMA_VERSION).encode():
        raise LakeSchemaError(
            f"{source}: lake schema version {found.decode(errors='replace')!r}, "
            f"this version reads {SCHEMA_VERSION}"
        )
    for expected in SCHEMA:
        if expected.name not in schema.names:
            raise LakeSchemaError(f"{source}: column {expected.name!r} is missing")
        actual = schema.field(expected.name).type
        if not _compatible(actual, expected.type):
            raise LakeSchemaError(
                f"{source}: column {expected.name!r} is {actual}, expected {expected.type}"
            )


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_dictionary(expected):
        value_type = actual.value_type if pa.types.is_dictionary(actual) else actual
        return bool(pa.types.is_string(value_type) or pa.types.is_large_string(value_type))
    if pa.types.is_string(expected):
        return bool(pa.types.is_string(actual) or pa.types.is_large_string(actual))
    return bool(actual.equals(expected))
