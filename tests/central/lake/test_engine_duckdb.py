"""Candidate tables on DuckDB over the lake equal the in-memory builder's on the same events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from central.datasets import read_log
from central.lake.errors import LakeCorruptError, LakeNotFoundError, LakeSchemaError
from central.lake.layout import open_lake
from central.trainer.pipeline import TrainerConfig
from central.trainer.tables import TableConfig
from central.trainer.tables import build_tables as memory_tables
from central.training.engine import Engine, EngineSettings, open_engine, parse_size
from central.training.errors import EngineError
from central.training.lakefile import lake_to_log, log_to_lake
from central.training.pipeline import LakeTrainConfig, plan_sessions
from central.training.source import select_files
from central.training.tables import build_tables
from devtools.loggen import GeneratorConfig, generate_file
from protocol.tables import CandidateTables
from tests.conftest import SharedFile

ARRAYS = (
    "covis_indptr",
    "covis_indices",
    "covis_weights",
    "pop_all",
    "pop_recent",
    "category",
    "price",
    "sess_indptr",
    "sess_items",
    "item_sess_indptr",
    "item_sess",
)


def assert_tables_equal(got: CandidateTables, want: CandidateTables) -> None:
    assert got.item_ids == want.item_ids
    assert got.categories == want.categories
    for name in ARRAYS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


def lake_engine(root: Path, **settings: object) -> Engine:
    engine = open_engine(EngineSettings(**settings))  # type: ignore[arg-type]
    engine.register_lake(select_files(root).files)
    return engine


@pytest.fixture(scope="module")
def movielens_lake(tmp_path_factory: pytest.TempPathFactory, shared_file: SharedFile) -> Path:
    log, _ = read_log(shared_file("movielens-100k.csv"), "csv")
    root = tmp_path_factory.mktemp("movielens-lake")
    log_to_lake(log, root)
    return root


@pytest.fixture(scope="module")
def shop_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated shop log: categories, prices, carts and purchases."""
    directory = tmp_path_factory.mktemp("shop")
    generate_file(directory / "shop.csv", GeneratorConfig(sessions=1_500, items=400, days=10))
    log, _ = read_log(directory / "shop.csv", "csv")
    log_to_lake(log, directory / "lake")
    return directory / "lake"


@pytest.fixture
def movielens_engine(movielens_lake: Path) -> Iterator[Engine]:
    engine = lake_engine(movielens_lake)
    yield engine
    engine.close()


def test_every_table_equals_the_in_memory_builders_on_movielens(
    movielens_lake: Path, movielens_engine: Engine
) -> None:
    plan_sessions(movielens_engine, LakeTrainConfig())
    got = build_tables(movielens_engine, TableConfig())
    assert_tables_equal(got, memory_tables(lake_to_log(movielens_lake), TableConfig()))


def test_tables_equal_with_categories_prices_and_tight_limits(shop_lake: Path) -> None:
    config = TableConfig(covis_neighbours=7, max_sessions=300, sessions_per_item=5, recent_days=2)
    engine = lake_engine(shop_lake, memory_limit_mib=256, threads=1)
    try:
        plan_sessions(engine, LakeTrainConfig())
        got = build_tables(engine, config)
    finally:
        engine.close()
    want = memory_tables(lake_to_log(shop_lake), config)
    assert np.isfinite(want.price).any() and want.categories
    assert_tables_equal(got, want)


def test_tables_of_a_scope_equal_the_in_memory_builders_on_those_sessions(
    shop_lake: Path,
) -> None:
    engine = lake_engine(shop_lake)
    try:
        plan_sessions(engine, LakeTrainConfig())
        got = build_tables(engine, TableConfig(), "plan.held = 0 AND plan.fold <> 2")
        chosen = engine.arrow(
            "SELECT session_id FROM sess JOIN plan ON sess.s = plan.s "
            "WHERE plan.held = 0 AND plan.fold <> 2"
        )
    finally:
        engine.close()
    log = lake_to_log(shop_lake)
    keep = set(chosen.column(0).to_pylist())
    assert 0 < len(keep) < len(log.session_ids)
    rows = np.asarray([log.session_ids[s] in keep for s in log.session.tolist()])
    assert_tables_equal(got, memory_tables(log.select(rows), TableConfig()))


def test_the_held_out_sessions_are_those_that_ended_last(shop_lake: Path) -> None:
    engine = lake_engine(shop_lake)
    try:
        plan = plan_sessions(engine, LakeTrainConfig(trainer=TrainerConfig()))
        held = engine.arrow(
            "SELECT session_id, last_ts FROM sess JOIN plan ON sess.s = plan.s WHERE held = 1"
        )
        others = engine.arrow(
            "SELECT max(last_ts) FROM sess JOIN plan ON sess.s = plan.s WHERE held = 0"
        )
    finally:
        engine.close()
    assert held.num_rows == round(plan.sessions * 0.1)
    assert min(held.column("last_ts").to_pylist()) >= others.column(0)[0].as_py()


def test_an_event_stored_twice_is_read_once(tmp_path: Path, shop_lake: Path) -> None:
    layout = open_lake(shop_lake)
    first = layout.data_files()[0]
    copy_root = tmp_path / "lake"
    for path in layout.data_files():
        target = copy_root / path.relative_to(shop_lake)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    # The first file again, as a writer that crashed before committing would have left it.
    (copy_root / first.relative_to(shop_lake)).with_name("again.parquet").write_bytes(
        first.read_bytes()
    )
    engine = lake_engine(copy_root)
    try:
        plan_sessions(engine, LakeTrainConfig())
        again = build_tables(engine, TableConfig())
    finally:
        engine.close()
    assert_tables_equal(again, memory_tables(lake_to_log(shop_lake), TableConfig()))


def test_days_keep_only_the_last_date_partitions(shop_lake: Path) -> None:
    days = open_lake(shop_lake).days()
    chosen = select_files(shop_lake, days=3)
    assert chosen.dates == days[-3:]
    assert all(path.parent.name.removeprefix("date=") in days[-3:] for path in chosen.files)


def test_a_lake_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(LakeNotFoundError, match="nowhere"):
        select_files(tmp_path / "nowhere")
    with pytest.raises(LakeNotFoundError, match="no event files"):
        select_files(tmp_path)


def test_a_file_of_another_schema_version_is_named(tmp_path: Path, shop_lake: Path) -> None:
    source = open_lake(shop_lake).data_files()[0]
    table = pq.read_table(source)
    other = table.replace_schema_metadata({b"proxima.lake.schema_version": b"2"})
    bad = open_lake(tmp_path, create=True).day("2020-01-01") / "other.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(other, bad)
    with pytest.raises(LakeSchemaError, match=r"other\.parquet.*version '2'"):
        select_files(tmp_path)


def test_a_file_of_other_columns_is_named(tmp_path: Path) -> None:
    bad = open_lake(tmp_path, create=True).day("2020-01-01") / "foreign.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), bad)
    with pytest.raises(LakeSchemaError, match=r"foreign\.parquet"):
        select_files(tmp_path)


def test_a_torn_file_is_named(tmp_path: Path, shop_lake: Path) -> None:
    source = open_lake(shop_lake).data_files()[0]
    torn = open_lake(tmp_path, create=True).day("2020-01-01") / "torn.parquet"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(LakeCorruptError, match=r"torn\.parquet"):
        select_files(tmp_path)


def test_sizes_parse_and_bad_ones_name_the_setting() -> None:
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    with pytest.raises(EngineError) as raised:
        parse_size("lots")
    assert raised.value.field == "memory_limit"


def test_an_unknown_engine_names_the_setting() -> None:
    with pytest.raises(EngineError) as raised:
        EngineSettings(engine="hadoop")
    assert raised.value.field == "engine"
