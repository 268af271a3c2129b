"""EdgeSettings.load: a TOML file, PROXIMA_* variables and flags, in that order of precedence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_node.config import EdgeSettings
from edge_node.errors import SettingsError

REQUIRED: dict[str, Any] = {"region": "eu", "node": "n1", "public_key": "/etc/proxima/edge.pub"}


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(**sources: Any) -> SettingsError:
    with pytest.raises(SettingsError) as raised:
        EdgeSettings.load(**sources)
    return raised.value


FULL_FILE = """
[edge]
region = "us-east"
node = "edge-7"
public_key = "/keys/edge.pub"
bundle = "/bundles/current.bundle"
port = 9000
redis = "redis://cache:6379/0"
spool_fsync = "always"
session_rate = 5
ip_burst = 50
cors_origins = ["https://shop.example", "https://m.shop.example"]
access_log = true
log_level = "debug"
"""


# -- sources and precedence ---------------------------------------------------------------------


def test_a_toml_file_with_an_edge_table_sets_typed_values(tmp_path: Path) -> None:
    settings = EdgeSettings.load(file=write_toml(tmp_path, FULL_FILE))

    assert settings.region == "us-east"
    assert settings.node == "edge-7"
    assert settings.public_key == Path("/keys/edge.pub")
    assert settings.bundle == Path("/bundles/current.bundle")
    assert settings.port == 9000
    assert settings.redis == "redis://cache:6379/0"
    assert settings.spool_fsync == "always"
    assert settings.session_rate == 5.0
    assert isinstance(settings.session_rate, float)
    assert settings.ip_burst == 50
    assert settings.cors_origins == ("https://shop.example", "https://m.shop.example")
    assert settings.access_log is True
    assert settings.log_level == "debug"
    assert settings.max_body_bytes == 512 * 1024  # untouched: the default


def test_a_toml_file_without_an_edge_table_is_read_whole(tmp_path: Path) -> None:
    settings = EdgeSettings.load(
        file=write_toml(tmp_path, 'region = "eu"\nnode = "a"\npublic_key = "k.pub"\nport = 81\n')
    )

    assert (settings.region, settings.node, settings.port) == ("eu", "a", 81)


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    settings = EdgeSettings.load(
        file=write_toml(tmp_path, FULL_FILE),
        env={"PROXIMA_PORT": "9100", "PROXIMA_SPOOL_FSYNC": "never", "PROXIMA_ACCESS_LOG": "off"},
    )

    assert settings.port == 9100
    assert settings.spool_fsync == "never"
    assert settings.access_log is False
    assert settings.region == "us-east"  # not in the environment: the file's


def test_flags_override_the_environment_and_unset_flags_do_not(tmp_path: Path) -> None:
    settings = EdgeSettings.load(
        file=write_toml(tmp_path, FULL_FILE),
        env={"PROXIMA_PORT": "9100", "PROXIMA_NODE": "from-env"},
        overrides={"port": 9200, "node": None, "default_k": 5},
    )

    assert settings.port == 9200
    assert settings.node == "from-env"
    assert settings.default_k == 5


def test_environment_values_are_converted_to_their_types() -> None:
    settings = EdgeSettings.load(
        env={
            "PROXIMA_REGION": "ap",
            "PROXIMA_NODE": "n2",
            "PROXIMA_PUBLIC_KEY": "/k.pub",
            "PROXIMA_SESSION_RATE": "2.5",
            "PROXIMA_SESSIONS_MAX": "1000",
            "PROXIMA_SPOOL_DIR": "/var/spool/proxima",
            "PROXIMA_ACCESS_LOG": "yes",
            "PROXIMA_REDIS": "",
        }
    )

    assert settings.session_rate == 2.5
    assert settings.sessions_max == 1000
    assert settings.spool_dir == Path("/var/spool/proxima")
    assert settings.access_log is True
    assert settings.redis is None  # an empty value unsets an optional setting


def test_tuple_settings_come_from_comma_separated_environment_strings() -> None:
    settings = EdgeSettings.load(
        env={
            **{f"PROXIMA_{k.upper()}": str(v) for k, v in REQUIRED.items()},
            "PROXIMA_CORS_ORIGINS": " https://a.example ,https://b.example,, ",
            "PROXIMA_API_KEYS": "key-one,key-two",
        }
    )

    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.api_keys == ("key-one", "key-two")
    assert "key-one" not in repr(settings)


def test_variables_without_the_prefix_or_for_other_commands_are_ignored() -> None:
    settings = EdgeSettings.load(
        env={
            **{f"PROXIMA_{k.upper()}": str(v) for k, v in REQUIRED.items()},
            "PORT": "1",
            "PROXIMA_SIGNING_KEY": "/central/only.pem",
            "PROXIMA_NATS_URL": "nats://bus:4222",
        }
    )

    assert settings.port == 8080


# -- refusals -----------------------------------------------------------------------------------


def test_an_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[edge]\nregion = "eu"\nnode = "a"\npublic_key = "k"\nprot = 81\n')

    error = load_error(file=path)

    assert error.field == "prot"
    assert "'prot'" in error.message
    assert str(path) in error.message


def test_an_unknown_flag_is_named() -> None:
    error = load_error(overrides={**REQUIRED, "max_bodybytes": 10})

    assert error.field == "max_bodybytes"
    assert "max_bodybytes" in error.message


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("port", 0, "positive"),
        ("port", 65536, "1-65535"),
        ("port", "abc", "abc"),
        ("port", 8080.5, "integer"),
        ("port", True, "integer"),
        ("sessions_max", "-3", "positive"),
        ("max_body_bytes", "9" * 5000, "max_body_bytes"),
        ("default_k", 101, "100"),
        ("session_rate", "0", "positive"),
        ("session_rate", "nan", "positive"),
        ("ip_rate", "fast", "ip_rate"),
        ("ip_rate", False, "number"),
        ("spool_fsync", "sometimes", "always, interval, never"),
        ("log_level", "loud", "debug"),
        ("access_log", "maybe", "true or false"),
        ("cors_origins", 5, "list"),
        ("region", 5, "string"),
        ("bundle", 5, "path"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(name: str, value: Any, words: str) -> None:
    error = load_error(overrides={**REQUIRED, name: value})

    assert error.field == name
    assert words in error.message


def test_a_bad_value_from_the_environment_is_refused_naming_the_setting() -> None:
    error = load_error(overrides=REQUIRED, env={"PROXIMA_STREAM_MAX_PER_SESSION": "many"})

    assert error.field == "stream_max_per_session"


@pytest.mark.parametrize("region", ["eu west", "", "eu.west", "r" * 65, "eu/west"])
def test_a_region_that_is_not_a_bus_token_is_refused(region: str) -> None:
    error = load_error(overrides={**REQUIRED, "region": region})

    assert error.field is not None and "region" in error.field
    assert error.message.startswith("region")


def test_a_node_that_is_not_a_bus_token_is_refused() -> None:
    error = load_error(overrides={**REQUIRED, "node": "node*"})

    assert error.field is not None and "node" in error.field
    assert error.message.startswith("node")


@pytest.mark.parametrize("missing", ["region", "node", "public_key"])
def test_a_missing_required_setting_says_how_to_give_it(missing: str) -> None:
    values = {k: v for k, v in REQUIRED.items() if k != missing}

    error = load_error(overrides=values)

    assert error.field == missing
    assert f"--{missing.replace('_', '-')}" in error.message
    assert f"PROXIMA_{missing.upper()}" in error.message
    assert "settings file" in error.message


def test_a_missing_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    error = load_error(file=path, overrides=REQUIRED)

    assert str(path) in error.message


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    error = load_error(file=write_toml(tmp_path, "[edge\nport = "), overrides=REQUIRED)

    assert "not valid TOML" in error.message


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_bytes(b'region = "\xff\xfe"\n')

    error = load_error(file=path, overrides=REQUIRED)

    assert "not valid TOML" in error.message


def test_an_edge_key_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    error = load_error(file=write_toml(tmp_path, "edge = 5\n"), overrides=REQUIRED)

    assert "[edge] must be a table" in error.message


def test_settings_errors_carry_their_own_code() -> None:
    error = load_error(overrides={**REQUIRED, "port": 0})

    assert error.code == "bad_settings"


# -- one settings file for every service, one error class ----------------------------------------


def test_the_edge_reads_its_own_table_of_a_file_shared_with_other_services(
    tmp_path: Path,
) -> None:
    path = write_toml(
        tmp_path,
        '[edge]\nregion = "eu"\nnode = "a"\npublic_key = "k.pub"\nport = 82\n'
        "[bridge]\nbatch = 64\n[trainer]\nport = 1\n",
    )

    settings = EdgeSettings.load(file=path)

    assert (settings.region, settings.port) == ("eu", 82)


def test_an_unknown_table_in_a_shared_file_is_named(tmp_path: Path) -> None:
    error = load_error(file=write_toml(tmp_path, '[egde]\nregion = "eu"\n'), overrides=REQUIRED)

    assert error.field == "egde"
    assert "unknown table [egde]" in error.message


def test_the_edge_settings_error_is_the_one_of_every_service() -> None:
    from runtime.settings import SettingsError as RuntimeSettingsError

    assert SettingsError is RuntimeSettingsError or issubclass(SettingsError, RuntimeSettingsError)
    with pytest.raises(RuntimeSettingsError):
        EdgeSettings.load(overrides={**REQUIRED, "port": 0})


def test_nats_settings_that_do_not_go_together_are_refused_when_loaded() -> None:
    error = load_error(overrides={**REQUIRED, "nats_url": "nats://bus:4222", "nats_user": "edge"})

    assert error.field == "nats_url"
    assert "password" in error.message


def test_the_storefront_is_off_unless_a_directory_is_given(tmp_path: Path) -> None:
    assert EdgeSettings.load(overrides=REQUIRED).storefront_dir is None
    settings = EdgeSettings.load(env={"PROXIMA_STOREFRONT_DIR": str(tmp_path)}, overrides=REQUIRED)
    assert settings.storefront_dir == tmp_path


def test_durations_take_units(tmp_path: Path) -> None:
    settings = EdgeSettings.load(
        file=write_toml(tmp_path, 'shutdown_timeout_s = "2m"\ntelemetry_interval_s = 1\n'),
        env={"PROXIMA_SPOOL_FSYNC_INTERVAL_S": "20ms"},
        overrides=REQUIRED,
    )

    assert settings.shutdown_timeout_s == 120.0
    assert settings.telemetry_interval_s == 1.0
    assert settings.spool_fsync_interval_s == pytest.approx(0.02)
