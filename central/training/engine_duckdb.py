"""DuckDB, embedded: the default engine, bounded by its memory limit and spilling to disk."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa

from central.training.engine import LAKE_VIEW, MIB, EngineSettings
from central.training.errors import EngineError, EngineUnavailableError


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDBEngine:
    name = "duckdb"

    def __init__(self, settings: EngineSettings) -> None:
        try:
            import duckdb
        except ImportError as exc:
            raise EngineUnavailableError(
                "engine duckdb is not installed: pip install 'proxima[central]'", field="engine"
            ) from exc
        self._duckdb = duckdb
        self._spill = tempfile.TemporaryDirectory(prefix="proxima-duckdb-", dir=settings.temp_dir)
        self._closed = False
        self.connection = duckdb.connect(":memory:")
        for statement in (
            f"SET memory_limit = '{settings.memory_limit_mib}MiB'",
            f"SET threads = {settings.cores}",
            f"SET temp_directory = {_quote(self._spill.name)}",
            "SET preserve_insertion_order = false",
        ):
            self.connection.execute(statement)

    @property
    def memory_limit_bytes(self) -> int:
        found = self.connection.execute(
            "SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'"
        ).fetchone()
        return int(float(str(found[0]).split()[0]) * MIB) if found else 0

    def register_lake(self, files: list[Path]) -> None:
        listed = ", ".join(_quote(str(path)) for path in files)
        self._run(
            f"CREATE OR REPLACE VIEW {LAKE_VIEW} AS SELECT * FROM read_parquet([{listed}], "
            "hive_partitioning = false)"
        )

    def create(self, name: str, sql: str) -> None:
        self._run(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def drop(self, name: str) -> None:
        self._run(f"DROP TABLE IF EXISTS {name}")

    def arrow(self, sql: str) -> pa.Table:
        try:
            return self.connection.sql(sql).to_arrow_table()
        except self._duckdb.Error as exc:
            raise EngineError(f"duckdb: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.connection.close()
        self._spill.cleanup()

    def _run(self, sql: str) -> None:
        try:
            self.connection.execute(sql)
        except self._duckdb.Error as exc:
            raise EngineError(f"duckdb: {exc}") from exc
