"""``proxima train --lake`` / ``--data`` on DuckDB: a bundle out, bad input named, replay
the same on one core and on several."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from central.cli import main
from central.datasets import read_log
from central.trainer.pipeline import TrainerConfig
from central.trainer.tables import TableConfig
from central.training.engine import EngineSettings, open_engine
from central.training.lakefile import log_to_lake
from central.training.pipeline import LakeTrainConfig, example_budget, plan_sessions
from central.training.replay import ReplaySettings, replay_groups
from central.training.source import select_files
from central.training.tables import build_tables
from devtools.loggen import GeneratorConfig, generate_file
from protocol.bundle import read_bundle
from protocol.keys import generate_keypair, load_public_key


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("shop")
    generate_file(directory / "shop.csv", GeneratorConfig(sessions=2_000, items=300, days=10))
    log, _ = read_log(directory / "shop.csv", "csv")
    log_to_lake(log, directory / "lake")
    return directory


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    private_pem, public_pem = generate_keypair()
    path = tmp_path_factory.mktemp("keys") / "signing.pem"
    path.write_bytes(private_pem)
    return path, public_pem


def test_train_on_a_lake_writes_a_bundle_trained_on_its_events(
    shop: Path, keys: tuple[Path, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "bundle.bin"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--lake",
            str(shop / "lake"),
            "--out",
            str(out),
            "--signing-key",
            str(keys[0]),
            "--memory-limit",
            "256MiB",
            "--version",
            "7",
        ],
    )
    assert result.exit_code == 0, result.output
    bundle = read_bundle(out.read_bytes(), load_public_key(keys[1]))
    training = bundle.manifest.training
    assert training["engine"] == "duckdb"
    assert training["events"] == read_log(shop / "shop.csv", "csv")[0].n_events
    assert bundle.manifest.metrics["validation"]["fp32"]["predictions"] > 0
    assert "wrote" in result.output


def test_train_on_a_log_file_goes_through_a_lake(
    shop: Path, keys: tuple[Path, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "bundle.bin"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(shop / "shop.csv"),
            "--format",
            "csv",
            "--out",
            str(out),
            "--signing-key",
            str(keys[0]),
            "--days",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    training = read_bundle(out.read_bytes(), load_public_key(keys[1])).manifest.training
    assert 0 < training["events"] < read_log(shop / "shop.csv", "csv")[0].n_events


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--lake", "{tmp}/nowhere"], "nowhere does not exist"),
        (["--lake", "{tmp}"], "holds no event files"),
        (["--lake", "{lake}", "--memory-limit", "lots"], "memory_limit"),
        (["--lake", "{lake}", "--engine", "hadoop"], "hadoop"),
        (["--lake", "{lake}", "--data", "{csv}", "--format", "csv"], "one of --lake"),
    ],
)
def test_bad_input_is_one_line_naming_it(
    shop: Path, keys: tuple[Path, bytes], tmp_path: Path, arguments: list[str], message: str
) -> None:
    values = {"tmp": str(tmp_path), "lake": str(shop / "lake"), "csv": str(shop / "shop.csv")}
    filled = [argument.format(**values) for argument in arguments]
    result = CliRunner().invoke(
        main,
        ["train", *filled, "--out", str(tmp_path / "b"), "--signing-key", str(keys[0])],
    )
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_engine_not_installed_names_the_setting(
    shop: Path, keys: tuple[Path, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--lake",
            str(shop / "lake"),
            "--engine",
            "spark",
            "--out",
            str(tmp_path / "b"),
            "--signing-key",
            str(keys[0]),
        ],
    )
    assert result.exit_code == 1
    assert "engine spark is not installed" in result.output
    assert "(engine) [engine_unavailable]" in result.output


def test_examples_are_the_same_on_one_process_and_on_two(shop: Path) -> None:
    engine = open_engine(EngineSettings())
    try:
        engine.register_lake(select_files(shop / "lake").files)
        plan_sessions(engine, LakeTrainConfig())
        tables = build_tables(engine, TableConfig(), "plan.fold <> 0")
        sessions = engine.arrow(
            "SELECT ev.s, sess.session_id, items.item_id, ev.ts, ev.type, cats.category, "
            "ev.price FROM ev JOIN plan ON ev.s = plan.s JOIN sess ON ev.s = sess.s "
            "JOIN items ON ev.i = items.i LEFT JOIN cats ON ev.c = cats.c "
            "WHERE plan.fold = 0 ORDER BY ev.s, ev.k"
        )
    finally:
        engine.close()
    config = TrainerConfig()
    settings = ReplaySettings(
        window=config.window, candidates=config.candidates, negatives=5, seed=3, chunk_rows=500
    )
    inline = replay_groups({"fold0": (tables, sessions)}, settings)["fold0"]
    pooled = replay_groups(
        {"fold0": (tables, sessions)},
        dataclasses.replace(settings, workers=2),
    )["fold0"]
    assert inline.covered > 100
    assert (inline.positions, inline.covered) == (pooled.positions, pooled.covered)
    np.testing.assert_array_equal(inline.features, pooled.features)
    np.testing.assert_array_equal(inline.labels, pooled.labels)
    np.testing.assert_array_equal(inline.groups, pooled.groups)


def test_the_example_budget_grows_with_the_data_within_the_memory_bound() -> None:
    config = LakeTrainConfig(max_positions=10**9)
    base = config.trainer.max_positions
    assert example_budget(500_000, config) == base
    assert example_budget(4_000_000, config) == 2 * base
    small = LakeTrainConfig(engine=EngineSettings(memory_limit_mib=64), max_positions=10**9)
    assert example_budget(4_000_000, small) < base



def test_evaluate_names_an_unknown_engine(shop: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["evaluate", "--data", str(shop / "shop.csv"), "--format", "csv", "--engine", "hadoop"],
    )
    assert result.exit_code == 2
    assert "--engine" in result.output and "hadoop" in result.output
