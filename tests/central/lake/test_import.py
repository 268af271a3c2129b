"""``proxima lake import`` and ``proxima lake stats``: the rows read_log reads, all or none."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from central.cli import main
from central.datasets import read_log
from central.errors import DataFormatError
from central.eventlog import EventLog
from central.lake.errors import LakeCorruptError, LakeNotFoundError, LakeSchemaError
from central.lake.importer import import_log
from central.lake.layout import open_lake
from central.lake.stats import lake_stats
from central.lake.tables import read_checked
from devtools.loggen import GeneratorConfig, generate
from tests.conftest import SharedFile

Row = tuple[str, str, int, str, str | None, float | None]


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def log_rows(log: EventLog) -> list[Row]:
    from protocol.events import EVENT_TYPES

    return sorted(
        (
            log.session_ids[s], log.item_ids[i], t, EVENT_TYPES[e],
            log.categories[c] if c >= 0 else None, None if p != p else round(float(p), 2),
        )
        for s, i, t, e, c, p in zip(
            log.session.tolist(), log.item.tolist(), log.ts.tolist(),
            log.event_type.tolist(), log.category.tolist(), log.price.tolist(), strict=True,
        )
    )  # fmt: skip


def lake_rows(root: Path) -> list[Row]:
    table = pa.concat_tables([read_checked(p) for p in open_lake(root).data_files()])
    columns = [table.column(name).to_pylist() for name in
               ("session_id", "item_id", "ts", "type", "category", "price")]  # fmt: skip
    return sorted(
        (s, i, t, e, c, None if p is None else round(p, 2))
        for s, i, t, e, c, p in zip(*columns, strict=True)
    )


@pytest.fixture
def shop_log(tmp_path: Path) -> Path:
    path = tmp_path / "shop.csv"
    with path.open("w") as out:
        generate(out, GeneratorConfig(sessions=400, items=200, categories=6, seed=3, days=5))
    return path


def test_movielens_imports_as_read_log_reads_it(shared_file: SharedFile, tmp_path: Path) -> None:
    data = shared_file("movielens-100k.csv")
    result = import_log(data, "csv", tmp_path / "lake", chunk_rows=30_000)
    log, stats = read_log(data, "csv")
    assert result.events == log.n_events
    assert result.sessions_from_users == stats.sessions_from_users
    assert lake_rows(tmp_path / "lake") == log_rows(log)


def test_a_shop_log_imports_by_day_with_fresh_ids_each_time(
    shop_log: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    first = import_log(shop_log, "csv", lake, chunk_rows=500)
    second = import_log(shop_log, "csv", lake, chunk_rows=100_000)
    assert second.first_offset == first.last_offset + 1
    log, _ = read_log(shop_log, "csv")
    assert lake_rows(lake) == sorted(log_rows(log) * 2)
    table = pa.concat_tables([read_checked(p) for p in open_lake(lake).data_files()])
    ids = table.column("event_id").to_pylist()
    assert len(set(ids)) == len(ids) == 2 * log.n_events
    assert set(table.column("kafka_partition").to_pylist()) == {-1}
    for path in open_lake(lake).data_files():
        dates = read_checked(path, ["ts"]).column("ts").cast(pa.timestamp("ms")).to_pylist()
        assert {d.date().isoformat() for d in dates} == {path.parent.name.removeprefix("date=")}
    figures = lake_stats(lake)
    assert figures.total.events == 2 * log.n_events
    assert figures.total.sessions == len(log.session_ids)
    assert figures.total.items == len(log.item_ids)
    assert sum(day.events for day in figures.per_day) == figures.total.events


def test_a_failed_import_leaves_the_lake_as_it_was(shop_log: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    import_log(shop_log, "csv", lake)
    before = {p: p.read_bytes() for p in open_lake(lake).data_files()}
    broken = tmp_path / "broken.csv"
    lines = shop_log.read_text().splitlines()
    broken.write_text("\n".join([*lines, "s1,u1,i1,not-a-time,view,,"]) + "\n")
    with pytest.raises(DataFormatError, match=rf"{broken}:{len(lines) + 1}: timestamp"):
        import_log(broken, "csv", lake, chunk_rows=300)
    assert {p: p.read_bytes() for p in open_lake(lake).data_files()} == before
    assert list((lake / "_staging").iterdir()) == []


def test_the_cli_imports_and_shows_stats(shop_log: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    imported = cli("lake", "import", "--data", shop_log, "--format", "csv", "--lake", lake)
    assert imported.exit_code == 0, imported.output
    assert "imported" in imported.output and "events/s" in imported.output
    shown = cli("lake", "stats", "--lake", lake, "--json")
    assert shown.exit_code == 0, shown.output
    figures = json.loads(shown.output)
    log, _ = read_log(shop_log, "csv")
    assert figures["total"]["events"] == log.n_events
    assert figures["days"] == len(figures["per_day"]) >= 5
    table = cli("lake", "stats", "--lake", lake)
    assert table.exit_code == 0 and "total" in table.output and f"{log.n_events:,}" in table.output


def test_a_file_of_another_schema_is_named(shop_log: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    import_log(shop_log, "csv", lake)
    stranger = open_lake(lake).day(open_lake(lake).days()[0]) / "other.parquet"
    pq.write_table(pa.table({"event_id": ["x"]}), stranger)
    with pytest.raises(LakeSchemaError, match=re.escape("other.parquet")):
        lake_stats(lake)
    shown = cli("lake", "stats", "--lake", lake)
    assert shown.exit_code == 1
    assert shown.output.startswith("error: ") and "other.parquet" in shown.output
    assert "Traceback" not in shown.output


def test_a_torn_file_is_named(shop_log: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    import_log(shop_log, "csv", lake)
    victim = open_lake(lake).data_files()[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(LakeCorruptError, match=re.escape(victim.name)):
        lake_stats(lake)
    shown = cli("lake", "stats", "--lake", lake)
    assert shown.exit_code == 1 and victim.name in shown.output and "Traceback" not in shown.output


def test_a_missing_lake_is_named(tmp_path: Path) -> None:
    with pytest.raises(LakeNotFoundError, match="nowhere"):
        lake_stats(tmp_path / "nowhere")
    shown = cli("lake", "stats", "--lake", tmp_path / "nowhere")
    assert shown.exit_code == 1
    assert shown.output.startswith("error: lake") and "nowhere" in shown.output


@pytest.mark.parametrize("url", ["s3://bucket/lake", "gs://bucket/lake"])
def test_an_object_store_lake_is_refused_by_name(url: str, shop_log: Path) -> None:
    for command in (("lake", "stats", "--lake", url),
                    ("lake", "import", "--data", shop_log, "--format", "csv", "--lake", url)):
        shown = cli(*command)
        assert shown.exit_code == 1
        assert shown.output.startswith("error: lake ") and "object-store" in shown.output
    assert not Path("s3:").exists() and not Path("gs:").exists()
