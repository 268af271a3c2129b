"""Spark: the same queries on DataFrames, in ``local[*]`` or on a cluster (``spark_master``).

Each :meth:`SparkEngine.create` persists its result (memory, then disk) and registers it
as a temporary view, so later queries read it rather than recomputing it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from central.training.engine import LAKE_VIEW, EngineSettings
from central.training.errors import EngineError, EngineUnavailableError


def spark_session(settings: EngineSettings) -> Any:
    """A SparkSession for ``settings`` (the UI off, few shuffle partitions)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineUnavailableError(
            "engine spark is not installed: pip install 'proxima[spark]'", field="engine"
        ) from exc
    if settings.spark_master.startswith("local") and shutil.which("java") is None:
        raise EngineUnavailableError(
            "engine spark needs Java on PATH for --spark-master local[*]", field="spark_master"
        )
    driver_memory = f"{max(512, settings.memory_limit_mib)}m"
    try:
        return (
            SparkSession.builder.master(settings.spark_master)
            .appName("proxima-train")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
            .config("spark.driver.memory", driver_memory)
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
    except Exception as exc:  # py4j and Spark raise many kinds when the JVM cannot start
        raise EngineUnavailableError(
            f"engine spark could not start at {settings.spark_master}: {exc}",
            field="spark_master",
        ) from exc


class SparkEngine:
    name = "spark"

    def __init__(self, settings: EngineSettings, *, session: Any = None) -> None:
        self._owned = session is None
        self.spark = session if session is not None else spark_session(settings)
        self._cached: dict[str, Any] = {}
        self._closed = False

    def register_lake(self, files: list[Path]) -> None:
        frame = self._call(lambda: self.spark.read.parquet(*(str(path) for path in files)))
        frame.createOrReplaceTempView(LAKE_VIEW)

    def create(self, name: str, sql: str) -> None:
        from pyspark import StorageLevel

        self.drop(name)
        frame = self._call(lambda: self.spark.sql(sql).persist(StorageLevel.MEMORY_AND_DISK))
        self._call(frame.count)
        frame.createOrReplaceTempView(name)
        self._cached[name] = frame

    def drop(self, name: str) -> None:
        frame = self._cached.pop(name, None)
        if frame is not None:
            frame.unpersist()
            self.spark.catalog.dropTempView(name)

    def arrow(self, sql: str) -> pa.Table:
        table: pa.Table = self._call(lambda: self.spark.sql(sql).toArrow())
        return table

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name in list(self._cached):
            self.drop(name)
        if self._owned:
            self.spark.stop()

    @staticmethod
    def _call(work: Any) -> Any:
        try:
            return work()
        except Exception as exc:  # AnalysisException, Py4JJavaError and their kin
            if isinstance(exc, EngineError):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"spark: {first}") from exc
