"""Settings declared once: loading from file tables, environment and flags; ranges; options."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from central.settings import (
    BridgeSettings,
    MonitorRoleSettings,
    RolloutSettings,
    TrainerSettings,
)
from edge_node.config import EdgeSettings
from runtime.nats import BusSettingsError, NatsSettings
from runtime.settings import (
    IMPLICIT_MAX_DURATION_S,
    SettingsError,
    check_ranges,
    load_settings,
    parse_duration,
    setting,
    settings_options,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    name: str = setting(help="A required name.")
    port: int = setting(8080, min=1, max=65535, help="A port.")
    ratio: float = setting(0.5, min=0.0, min_open=True, max=1.0, help="A share.")
    every_s: float = setting(
        60.0, min=1.0, max=3600.0, duration=True, flag="--every", help="A period."
    )
    mode: Literal["fast", "safe"] = setting("safe", help="A choice.")
    tags: tuple[str, ...] = setting((), help="Words.")
    steps: tuple[int, ...] = setting((), help="Numbers.")
    enabled: bool = setting(False, help="A switch.")
    path: Path | None = setting(None, help="A file.")
    hidden: str = setting("x", cli=False, help="File and environment only.")

    def __post_init__(self) -> None:
        check_ranges(self)


def test_later_sources_win_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "proxima.toml"
    file.write_text('[bridge]\nname = "from-file"\nport = 1000\nratio = 0.25\n')
    loaded = load_settings(
        Sample,
        table="bridge",
        file=file,
        env={"PROXIMA_PORT": "2000", "PROXIMA_UNRELATED": "left alone"},
        overrides={"ratio": 0.75, "name": None},
    )
    assert (loaded.name, loaded.port, loaded.ratio) == ("from-file", 2000, 0.75)


def test_values_are_coerced_from_text() -> None:
    loaded = load_settings(
        Sample,
        table="bridge",
        env={
            "PROXIMA_NAME": "n",
            "PROXIMA_EVERY_S": "10m",
            "PROXIMA_TAGS": "a, b,,c",
            "PROXIMA_STEPS": "5,25,100",
            "PROXIMA_ENABLED": "yes",
            "PROXIMA_PATH": "/tmp/x",
            "PROXIMA_MODE": "fast",
        },
    )
    assert loaded.every_s == 600.0
    assert loaded.tags == ("a", "b", "c")
    assert loaded.steps == (5, 25, 100)
    assert loaded.enabled is True
    assert loaded.path == Path("/tmp/x")
    assert loaded.mode == "fast"


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"port": 0}, "port", "at least 1"),
        ({"port": 70000}, "port", "at most 65535"),
        ({"ratio": 0.0}, "ratio", "above 0"),
        ({"ratio": float("nan")}, "ratio", "finite"),
        ({"mode": "reckless"}, "mode", "one of fast, safe"),
        ({"port": "eighty"}, "port", "port"),
        ({"enabled": "perhaps"}, "enabled", "true or false"),
        ({"every_s": "soon"}, "every_s", "duration"),
        ({"colour": "red"}, "colour", "unknown setting"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(Sample, table="bridge", overrides={"name": "n", **overrides})
    assert caught.value.field == field
    assert words in caught.value.message
    assert caught.value.code == "bad_settings"


def test_a_missing_required_setting_says_where_it_can_come_from() -> None:
    with pytest.raises(SettingsError, match=r"name is required \(flag --name, env PROXIMA_NAME"):
        load_settings(Sample, table="bridge")


def test_the_file_is_checked_key_by_key_and_table_by_table(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('[bridge]\nname = "n"\nprot = 1\n')
    with pytest.raises(SettingsError, match=r"\[bridge\] has no setting 'prot'"):
        load_settings(Sample, table="bridge", file=file)
    file.write_text('[brigde]\nname = "n"\n')
    with pytest.raises(SettingsError, match=r"unknown table \[brigde\]"):
        load_settings(Sample, table="bridge", file=file)
    file.write_text('name = "n"\n[bridge]\nport = 2\n')
    with pytest.raises(SettingsError, match="outside any table"):
        load_settings(Sample, table="bridge", file=file)
    file.write_text("name = [")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(Sample, table="bridge", file=file)
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(Sample, table="bridge", file=tmp_path / "absent.toml")


def test_a_flat_file_is_the_one_service_table(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('name = "flat"\nport = 9\n')
    assert load_settings(Sample, table="bridge", file=file).port == 9


def test_another_tables_settings_do_not_leak_in(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('[bridge]\nname = "b"\n[trainer]\nname = "t"\nport = 7\n')
    loaded = load_settings(Sample, table="bridge", file=file)
    assert (loaded.name, loaded.port) == ("b", 8080)


def _command() -> click.Command:
    @click.command()
    @settings_options(Sample)
    def show(**flags: object) -> None:
        loaded = load_settings(Sample, table="bridge", overrides=flags)
        click.echo(f"{loaded.port} {loaded.every_s} {loaded.enabled} {loaded.mode}")

    return show


def test_options_are_generated_from_the_fields() -> None:
    runner = CliRunner()
    result = runner.invoke(_command(), ["--name", "n", "--every", "2m", "--enabled"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "8080 120.0 True safe"
    help_text = runner.invoke(_command(), ["--help"]).output
    assert "--port INTEGER RANGE" in help_text
    assert "[default: 8080]" in help_text
    assert "Env: PROXIMA_PORT" in help_text
    assert "--hidden" not in help_text  # cli=False
    assert "--no-enabled" in help_text


def test_a_generated_option_refuses_what_the_range_refuses() -> None:
    result = CliRunner().invoke(_command(), ["--name", "n", "--port", "0"])
    assert result.exit_code == 2
    assert "0 is not in the range 1<=x<=65535" in result.output


def test_a_flag_left_out_does_not_override_the_environment() -> None:
    @click.command()
    @settings_options(Sample)
    def show(**flags: object) -> None:
        click.echo(
            load_settings(Sample, table="bridge", env={"PROXIMA_PORT": "77"}, overrides=flags).port
        )

    assert CliRunner().invoke(show, ["--name", "n"]).output.strip() == "77"


def test_durations() -> None:
    assert parse_duration("90s") == 90.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("12") == 12.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("ten minutes")


def test_mutable_defaults_are_refused() -> None:
    with pytest.raises(TypeError, match="immutable"):
        setting([], help="a list")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("spool_fsync_interval_s", float("inf"), "finite"),
        ("spool_fsync_interval_s", "inf", "not a duration"),
        ("spool_fsync_interval_s", float("nan"), "finite"),
        ("spool_fsync_interval_s", 1e300, "at most 60"),
        ("shutdown_timeout_s", float("inf"), "finite"),
        ("shutdown_timeout_s", "inf", "not a duration"),
        ("shutdown_timeout_s", "9" * 400, "finite"),  # parses to inf
        ("shutdown_timeout_s", 1e300, "at most 3600"),
        ("session_rate", float("inf"), "finite"),
        ("publish_batch", 10**12, "at most 10000"),
    ],
)
def test_the_edge_refuses_infinite_and_unbounded_numbers(
    name: str, value: object, words: str
) -> None:
    required = {"region": "r", "node": "n", "public_key": "key.pub"}
    with pytest.raises(SettingsError) as caught:
        EdgeSettings.load(overrides={**required, name: value})
    assert caught.value.field == name
    assert words in caught.value.message


def test_infinity_from_a_toml_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "edge.toml"
    file.write_text(
        '[edge]\nregion = "r"\nnode = "n"\npublic_key = "k"\nshutdown_timeout_s = inf\n'
    )
    with pytest.raises(SettingsError, match="shutdown_timeout_s must be a finite number"):
        EdgeSettings.load(file=file)


SETTINGS_CLASSES = (
    EdgeSettings,
    BridgeSettings,
    TrainerSettings,
    MonitorRoleSettings,
    RolloutSettings,
)


# Central options still declared by hand in central/cli with an open-ended range; their
# fields keep the implicit ceiling until those options are generated from the fields.
HAND_MIRRORED_OPEN_ENDED = {
    "status_every_s",
    "retrain_events",
    "retrain_interval_s",
    "min_events",
    "canary_interval_s",
    "canary_max_p99_ms",
    "canary_min_ctr_ratio",
    "canary_min_requests",
}
NUMBER_HINTS = (int, float, int | None, float | None)


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda c: c.__name__)
def test_every_numeric_setting_declares_a_finite_range(cls: type[object]) -> None:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    numeric = [f for f in fields if hints[f.name] in NUMBER_HINTS]
    assert numeric
    for f in numeric:
        low, high = f.metadata["min"], f.metadata["max"]
        assert low is not None and math.isfinite(low), f.name
        if f.name in HAND_MIRRORED_OPEN_ENDED:
            assert high is None, f"{f.name} is bounded now: drop it from the exemptions"
            continue
        assert high is not None and math.isfinite(high) and low < high, f.name


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenEnded:
    timeout_s: float = setting(1.0, min=0.0, duration=True, help="No declared ceiling.")
    count: int = setting(1, min=0, help="No declared ceiling.")

    def __post_init__(self) -> None:
        check_ranges(self)


def test_a_number_without_a_declared_max_still_has_a_ceiling() -> None:
    assert OpenEnded(timeout_s=IMPLICIT_MAX_DURATION_S).timeout_s == IMPLICIT_MAX_DURATION_S
    with pytest.raises(SettingsError, match="timeout_s must be at most") as caught:
        OpenEnded(timeout_s=1e300)
    assert caught.value.field == "timeout_s"
    with pytest.raises(SettingsError, match="count must be at most") as caught:
        OpenEnded(count=10**30)
    assert caught.value.field == "count"


def test_nats_timeouts_are_finite_and_bounded() -> None:
    for field_name in ("connect_timeout_s", "reconnect_wait_s"):
        for value in (float("inf"), float("nan"), 0.0, 1e9):
            with pytest.raises(BusSettingsError) as caught:
                NatsSettings(**{field_name: value})  # type: ignore[arg-type]
            assert caught.value.field == field_name
