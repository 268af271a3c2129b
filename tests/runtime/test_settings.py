"""Settings declared once: loading from file tables, environment and flags; ranges; options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from runtime.settings import (
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
    every_s: float = setting(60.0, min=1.0, duration=True, flag="--every", help="A period.")
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
