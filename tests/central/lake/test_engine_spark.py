"""The same job on Spark (``local[2]``): the same session plan and tables as DuckDB.

One Spark session serves the module (starting one costs about ten seconds); the test is
skipped, saying why, where Java or PySpark is absent.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from central.datasets import read_log
from central.trainer.tables import TableConfig
from central.training.engine import EngineSettings, open_engine
from central.training.engine_spark import spark_session
from central.training.lakefile import log_to_lake
from central.training.pipeline import LakeTrainConfig, plan_sessions
from central.training.source import select_files
from central.training.tables import build_tables
from tests.central.lake.test_engine_duckdb import assert_tables_equal
from tests.conftest import SharedFile

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java on PATH"),
    pytest.mark.skipif(
        importlib.util.find_spec("pyspark") is None,
        reason="pyspark is not installed (pip install 'proxima[spark]')",
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

SPARK = EngineSettings(
    engine="spark", spark_master="local[2]", spark_shuffle_partitions=2, memory_limit_mib=1024
)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session(SPARK)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def movielens_lake(tmp_path_factory: pytest.TempPathFactory, shared_file: SharedFile) -> Path:
    log, _ = read_log(shared_file("movielens-100k.csv"), "csv")
    root = tmp_path_factory.mktemp("movielens-lake")
    log_to_lake(log, root)
    return root


@pytest.mark.timeout(1200)
def test_spark_builds_the_tables_and_plan_duckdb_builds(movielens_lake: Path, spark: Any) -> None:
    files = select_files(movielens_lake).files
    found = {}
    for engine in (open_engine(EngineSettings()), open_engine(SPARK, spark=spark)):
        try:
            engine.register_lake(files)
            plan = plan_sessions(engine, LakeTrainConfig())
            tables = build_tables(engine, TableConfig(), "plan.held = 0 AND plan.fold <> 1")
            sessions = engine.arrow("SELECT s, held, fold, u FROM plan ORDER BY s")
            found[engine.name] = (plan, tables, sessions)
        finally:
            engine.close()
    (duck_plan, duck_tables, duck_sessions) = found["duckdb"]
    (spark_plan, spark_tables, spark_sessions) = found["spark"]
    assert spark_plan == duck_plan
    assert_tables_equal(spark_tables, duck_tables)
    for column in ("s", "held", "fold", "u"):
        np.testing.assert_array_equal(
            spark_sessions.column(column).to_numpy(), duck_sessions.column(column).to_numpy()
        )
