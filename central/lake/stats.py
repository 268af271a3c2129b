"""``proxima lake stats``: days, events, sessions, items and bytes of a lake, by DuckDB.

Every file's footer is checked first (:func:`central.lake.tables.check_files`), so a file
of another schema version or a torn one is named in the error rather than failing the
query somewhere inside DuckDB. The query reads the live files only
(:meth:`~central.lake.layout.LakeLayout.data_files`), two columns of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from central.lake.errors import LakeCorruptError
from central.lake.layout import open_lake
from central.lake.tables import check_files


@dataclass(frozen=True, slots=True)
class DayStats:
    date: str
    events: int
    sessions: int
    items: int
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class LakeStats:
    root: str
    per_day: list[DayStats] = field(default_factory=list)
    total: DayStats = DayStats("total", 0, 0, 0, 0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "days": len(self.per_day),
            "per_day": [asdict(day) for day in self.per_day],
            "total": {k: v for k, v in asdict(self.total).items() if k != "date"},
        }


def lake_stats(root: Path) -> LakeStats:
    layout = open_lake(root)
    files = layout.data_files()
    if not files:
        return LakeStats(str(root))
    check_files(files)
    sizes: dict[str, list[int]] = {}
    for path in files:
        sizes.setdefault(path.parent.name.removeprefix("date="), []).append(path.stat().st_size)
    listing = [str(path) for path in files]
    try:
        with duckdb.connect() as connection:
            connection.execute("SET threads TO 2")
            source = "read_parquet($files, hive_partitioning = true)"
            per_day = connection.execute(
                f"SELECT CAST(date AS VARCHAR), count(*), count(DISTINCT session_id), "
                f"count(DISTINCT item_id) FROM {source} GROUP BY date ORDER BY date",
                {"files": listing},
            ).fetchall()
            total = connection.execute(
                f"SELECT count(*), count(DISTINCT session_id), count(DISTINCT item_id) "
                f"FROM {source}",
                {"files": listing},
            ).fetchone()
    except duckdb.Error as exc:
        raise LakeCorruptError(f"lake {root}: cannot be read: {exc}") from exc
    assert total is not None
    days = [
        DayStats(str(date), int(events), int(sessions), int(items),
                 len(sizes.get(str(date), [])), sum(sizes.get(str(date), [])))
        for date, events, sessions, items in per_day
    ]  # fmt: skip
    return LakeStats(
        str(root),
        days,
        DayStats("total", int(total[0]), int(total[1]), int(total[2]), len(files),
                 sum(sum(s) for s in sizes.values())),
    )  # fmt: skip
