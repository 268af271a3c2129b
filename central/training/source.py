"""Which lake files a training reads: the last ``days`` date partitions, each file checked.

Only footers are read here: a file of another schema version is refused as
:class:`~central.lake.errors.LakeSchemaError` and a torn or unreadable one as
:class:`~central.lake.errors.LakeCorruptError`, both naming the file, before any engine
is started.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from central.lake.errors import LakeCorruptError, LakeNotFoundError
from central.lake.layout import LakeLayout, open_lake
from central.lake.schema import check_schema


@dataclass(frozen=True, slots=True)
class LakeSelection:
    root: Path
    dates: list[str]
    files: list[Path]
    rows: int  # rows in the chosen files, every event type


def select_files(root: Path | str, *, days: int | None = None) -> LakeSelection:
    layout = open_lake(root)
    dates = window_dates(layout, days)
    files = layout.data_files(dates)
    if not files:
        raise LakeNotFoundError(f"lake {layout.root} holds no event files")
    rows = 0
    for path in files:
        rows += _checked_rows(path)
    return LakeSelection(layout.root, dates, files, rows)


def window_dates(layout: LakeLayout, days: int | None) -> list[str]:
    """The date partitions of the last ``days`` days up to the newest (all when None)."""
    dates = layout.days()
    if days is None or not dates:
        return dates
    newest = dt.date.fromisoformat(dates[-1])
    first = (newest - dt.timedelta(days=days - 1)).isoformat()
    return [date for date in dates if date >= first]


def _checked_rows(path: Path) -> int:
    try:
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise LakeCorruptError(f"{path}: not a readable Parquet file ({exc})") from exc
    check_schema(schema, source=str(path))
    return int(metadata.num_rows)
