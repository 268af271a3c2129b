"""The query engines training runs its table and sampling queries on, behind one interface.

Both engines read the same Parquet lake and run the same SQL (:mod:`central.training.tables`
keeps to what DuckDB and Spark SQL both understand): :meth:`Engine.create` materialises a
query under a name, :meth:`Engine.arrow` brings a (small) result into Python as Arrow.
DuckDB (embedded, the default) is bounded by ``memory_limit`` and spills to ``temp_dir``;
Spark runs wherever ``spark_master`` points (``local[*]`` by default).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import pyarrow as pa

from central.training.errors import EngineError
from runtime.settings import setting

EngineName = Literal["duckdb", "spark", "memory"]
ENGINES: Final = ("duckdb", "spark", "memory")
LAKE_VIEW: Final = "lake_events"
MIB: Final = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "b": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024 * 1024 * MIB}


def parse_size(text: str, *, field: str = "memory_limit") -> int:
    """Bytes in ``2GiB``, ``512MiB``, ``1.5G``, ``4096`` (binary units either way)."""
    match = _SIZE.match(text)
    if match is None:
        raise EngineError(f"{field} {text!r} is not a size such as 2GiB or 512MiB", field=field)
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True, slots=True)
class EngineSettings:
    engine: str = setting("duckdb", help="Query engine: duckdb (embedded), spark, or memory.")
    memory_limit_mib: int = setting(
        2048, min=64, max=16 * 1024 * 1024, help="Memory the engine may use before spilling."
    )
    threads: int = setting(0, min=0, max=1024, help="Engine threads; 0: every core.")
    temp_dir: Path | None = setting(None, help="Where the engine spills; default: system temp.")
    spark_master: str = setting("local[*]", help="Spark master URL for --engine spark.")
    spark_shuffle_partitions: int = setting(
        8, min=1, max=100_000, help="spark.sql.shuffle.partitions for --engine spark."
    )

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise EngineError(
                f"engine {self.engine!r} is not one of {', '.join(ENGINES)}", field="engine"
            )

    @property
    def cores(self) -> int:
        return self.threads or os.cpu_count() or 1


class Engine(Protocol):
    name: str

    def register_lake(self, files: list[Path]) -> None:
        """Makes the Parquet ``files`` readable as the view ``lake_events``."""

    def create(self, name: str, sql: str) -> None:
        """Materialises ``sql`` as the table ``name`` (replacing one of that name)."""

    def drop(self, name: str) -> None: ...

    def arrow(self, sql: str) -> pa.Table: ...

    def close(self) -> None: ...


def scalar(engine: Engine, sql: str) -> Any:
    table = engine.arrow(sql)
    return table.column(0)[0].as_py() if table.num_rows else None


def open_engine(settings: EngineSettings, *, spark: Any = None) -> Engine:
    """The engine ``settings.engine`` names; ``spark``: a SparkSession to use (not stopped)."""
    if settings.engine == "duckdb":
        from central.training.engine_duckdb import DuckDBEngine

        return DuckDBEngine(settings)
    if settings.engine == "spark":
        from central.training.engine_spark import SparkEngine

        return SparkEngine(settings, session=spark)
    raise EngineError(f"engine {settings.engine!r} runs no queries", field="engine")
