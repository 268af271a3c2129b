"""``proxima-edge serve`` (and its alias ``proxima edge serve``): options made from the settings."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from central.cli import main as proxima
from edge_node.cli import edge, serve
from edge_node.config import EdgeSettings

# Every flag `proxima edge serve` had before its options were made from EdgeSettings.
FLAGS_BEFORE = (
    "--config",
    "--bundle",
    "--public-key",
    "--region",
    "--node",
    "--nats",
    "--redis",
    "--rules",
    "--host",
    "--port",
    "--spool-dir",
)
SECRETS = ("nats_password", "nats_token", "redis_password", "api_keys", "feedback_secret")


def option_names(command: click.Command) -> dict[str, click.Option]:
    return {
        name: param
        for param in command.params
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
    }


def test_every_flag_of_before_is_still_taken() -> None:
    options = option_names(serve)

    assert set(FLAGS_BEFORE) <= set(options)
    assert options["--nats"].name == "nats_url"


def test_every_setting_but_the_secrets_has_a_flag() -> None:
    names = {param.name for param in option_names(serve).values()}
    fields = {f.name for f in dataclasses.fields(EdgeSettings)}

    assert names - {"config_file"} == fields - set(SECRETS)
    assert "--storefront-dir" in option_names(serve)


def test_the_help_shows_each_settings_default_range_and_variable() -> None:
    result = CliRunner().invoke(edge, ["serve", "--help"], terminal_width=200)

    assert result.exit_code == 0, result.output
    assert "[default: 8080]" in result.output
    assert "1<=x<=65535" in result.output
    assert "Env: PROXIMA_NATS_URL" in result.output
    assert "--access-log / --no-access-log" in result.output
    assert "--api-keys" not in result.output


def test_proxima_edge_is_the_same_command() -> None:
    group = proxima.get_command(click.Context(proxima), "edge")

    assert group is edge
    assert isinstance(group, click.Group)
    assert group.get_command(click.Context(group), "serve") is serve


def test_a_flag_out_of_range_is_refused_by_the_parser() -> None:
    result = CliRunner().invoke(edge, ["serve", "--region", "eu", "--port", "0"])

    assert result.exit_code == 2
    assert "--port" in result.output


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--region", "eu", "--node", "n1"], {}, "public_key is required"),
        (["--region", "eu", "--node", "n1", "--public-key", "absent.pub"], {}, "absent.pub"),
        (["--node", "n1", "--public-key", "k.pub"], {"PROXIMA_REGION": "e u"}, "region"),
    ],
)
def test_a_bad_start_is_one_error_line_and_status_1(
    args: list[str], env: dict[str, str], words: str
) -> None:
    result = CliRunner().invoke(edge, ["serve", *args], env=env)

    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert words in line
    assert line.endswith("[bad_settings]")
