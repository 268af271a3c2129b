"""The columnar fast path of :mod:`central.datasets`: a chunk of csv rows checked and
converted whole, with Arrow, instead of one row at a time. The chunk's cells come from
Arrow's csv tokenizer while it accepts the file, else from the csv module.

The rules are those of the row-by-row reader, and that reader stays their definition:
this path takes a chunk only when every cell is one whose meaning is plain — no
whitespace or other non-ASCII character at either end (so ``str.strip`` would change
nothing), timestamps and prices of decimal digits, known event types, calendar dates that
parse — and then gives exactly what the row reader would. Any other chunk (a malformed
row, a cell with padding, ``1e5`` as a time) returns None, and the caller reads that chunk
row by row, which reports or skips its bad rows with their lines as it always has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from protocol.events import EVENT_TYPE_CODES, EVENT_TYPES

RAW_SCHEMA: Final = pa.schema(
    [
        pa.field("key", pa.string()), pa.field("item", pa.string()),
        pa.field("time", pa.float64()), pa.field("type", pa.int8()),
        pa.field("category", pa.string()), pa.field("price", pa.float64()),
        pa.field("user", pa.string()),
    ]
)  # fmt: skip
"""A chunk of rows: session (or user) key, item, time as written, type code, category,
price, and the user of a log of sessions that names them (null otherwise)."""

_PLAIN: Final = r"^[!-~](?s:.*[!-~])?$"  # not empty; str.strip() leaves it as it is
_PLAIN_OR_EMPTY: Final = r"^(?:[!-~](?s:.*[!-~])?)?$"
_DECIMAL: Final = r"^[0-9]{1,18}(?:\.[0-9]{1,18})?$"
_DECIMAL_OR_EMPTY: Final = r"^(?:[0-9]{1,18}(?:\.[0-9]{1,18})?)?$"
_WHOLE: Final = r"^[0-9]{1,12}$"  # a frame under 2^53 ms once added to its day
_DATE: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_VIEW: Final = EVENT_TYPE_CODES["view"]
_TYPE_NAMES: Final = pa.array(EVENT_TYPES, pa.string())


@dataclass(frozen=True, slots=True)
class GenericColumns:
    """Where a csv log's columns are (indexes into a row)."""

    width: int
    key_name: str
    key: int
    item: int
    time: int
    type: int | None
    category: int | None
    price: int | None
    user: int | None  # kept for a log of sessions that names its users


def _all(values: pa.Array, pattern: str) -> bool:
    return bool(pc.all(pc.match_substring_regex(values, pattern)).as_py() is not False)


Column = Callable[[int], pa.Array]  # the chunk's cells of one column (by index), as strings


def row_columns(rows: list[list[str]], width: int) -> Column | None:
    """The columns of rows read by the csv module; None when a row is not ``width`` wide."""
    if any(len(row) != width for row in rows):
        return None
    transposed = list(zip(*rows, strict=True))

    def column(index: int) -> pa.Array:
        return pa.array(transposed[index], pa.string())

    return column


def _empty_to_null(values: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def generic_table(column: Column, count: int, shape: GenericColumns) -> pa.Table | None:
    """The chunk as :data:`RAW_SCHEMA`, or None when the row reader must read it."""
    key, item, time = (column(i) for i in (shape.key, shape.item, shape.time))
    if not (_all(key, _PLAIN) and _all(item, _PLAIN) and _all(time, _DECIMAL)):
        return None
    types = pa.array(np.full(count, _VIEW, dtype=np.int8))
    if shape.type is not None:
        names = column(shape.type)
        if not _all(names, _PLAIN_OR_EMPTY):
            return None
        codes = pc.index_in(names, value_set=_TYPE_NAMES)
        codes = pc.if_else(pc.equal(names, ""), _VIEW, codes)
        if codes.null_count:
            return None  # an unknown type: the row reader names its line
        types = codes.cast(pa.int8())
    category = _optional_text(column, shape.category, count)
    user = _optional_text(column, shape.user, count)
    price = pa.nulls(count, pa.float64())
    if shape.price is not None:
        prices = column(shape.price)
        if not _all(prices, _DECIMAL_OR_EMPTY):
            return None
        price = pc.cast(_empty_to_null(prices), pa.float64())
    if category is None or user is None:
        return None
    return pa.Table.from_arrays(
        [key, item, pc.cast(time, pa.float64()), types, category, price, user],
        schema=RAW_SCHEMA,
    )


def _optional_text(column: Column, index: int | None, count: int) -> pa.Array | None:
    """A column whose empty cells mean unknown; None when a cell is not plain."""
    if index is None:
        return pa.nulls(count, pa.string())
    values = column(index)
    if not _all(values, _PLAIN_OR_EMPTY):
        return None
    return _empty_to_null(values)


def diginetica_table(
    column: Column, count: int, columns_at: tuple[int, int, int, int],
    midnight_ms: Callable[[str], int | None],
) -> pa.Table | None:  # fmt: skip
    """A diginetica chunk as :data:`RAW_SCHEMA`, or None when the row reader must read it.
    ``midnight_ms`` gives a date's midnight (UTC, ms), None for one that is no date."""
    session, item, frame, date = (column(i) for i in columns_at)
    if not (
        _all(session, _PLAIN) and _all(item, _PLAIN) and _all(frame, _WHOLE)
        and _all(date, _DATE)
    ):  # fmt: skip
        return None
    encoded = date.dictionary_encode()
    midnights: list[int] = []
    for text in encoded.dictionary.to_pylist():
        midnight = midnight_ms(str(text))
        if midnight is None:
            return None
        midnights.append(midnight)
    day_ms = pc.take(pa.array(midnights, pa.int64()), encoded.indices)
    times = pc.add(day_ms, pc.cast(frame, pa.int64()))
    return pa.Table.from_arrays(
        [
            session, item, pc.cast(times, pa.float64()),
            pa.array(np.full(count, _VIEW, dtype=np.int8)), pa.nulls(count, pa.string()),
            pa.nulls(count, pa.float64()), pa.nulls(count, pa.string()),
        ],
        schema=RAW_SCHEMA,
    )  # fmt: skip


def rows_table(
    keys: list[str], items: list[str], times: list[float], types: list[int],
    categories: list[str | None], prices: list[float | None], users: list[str | None] | None,
) -> pa.Table:  # fmt: skip
    """What the row reader read, as :data:`RAW_SCHEMA`."""
    return pa.Table.from_arrays(
        [
            pa.array(keys, pa.string()), pa.array(items, pa.string()),
            pa.array(times, pa.float64()), pa.array(types, pa.int8()),
            pa.array(categories, pa.string()), pa.array(prices, pa.float64()),
            pa.nulls(len(keys), pa.string()) if users is None else pa.array(users, pa.string()),
        ],
        schema=RAW_SCHEMA,
    )  # fmt: skip
