"""The central commands' options agree with the settings classes: same default, same range.

The settings classes of :mod:`central.settings` declare each role's settings once; every
option of ``central run``, ``central bridge``, ``central train --follow`` and
``central controller`` that names one of their fields must carry its default and range.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest

from central.cli.bridge import bridge
from central.cli.controller import controller
from central.cli.run import run
from central.cli.train_follow import train_follow
from central.kafka_settings import KafkaSecurity
from central.settings import BridgeSettings, MonitorRoleSettings, RolloutSettings, TrainerSettings
from runtime.nats import NatsClientSettings

COMMANDS = {"run": run, "bridge": bridge, "train": train_follow, "controller": controller}
CLASSES = (
    BridgeSettings,
    TrainerSettings,
    MonitorRoleSettings,
    RolloutSettings,
    NatsClientSettings,
    KafkaSecurity,
)


def declared() -> dict[str, dataclasses.Field[Any]]:
    """Flag → field, over every class (a shared field is declared once, so any copy serves)."""
    fields: dict[str, dataclasses.Field[Any]] = {}
    for cls in CLASSES:
        for f in dataclasses.fields(cls):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            fields.setdefault(flag, f)
    return fields


def comparable(value: Any) -> Any:
    if isinstance(value, Path):
        return Path(value).resolve()
    if value == "" or value == ():
        return None
    return value


def options_with_fields() -> list[tuple[str, click.Option, dataclasses.Field[Any]]]:
    fields = declared()
    found = []
    for name, command in COMMANDS.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.opts[0] in fields:
                found.append((name, param, fields[param.opts[0]]))
    return found


def test_the_commands_share_their_options_with_the_settings() -> None:
    flags = {(name, option.opts[0]) for name, option, _ in options_with_fields()}
    for expected in [
        ("run", "--state-dir"),
        ("train", "--state-dir"),
        ("run", "--retrain-interval"),
        ("train", "--retrain-interval"),
        ("run", "--partitions"),
        ("bridge", "--partitions"),
        ("run", "--nats"),
        ("bridge", "--nats"),
        ("controller", "--nats"),
        ("bridge", "--replication-factor"),
        ("bridge", "--min-insync-replicas"),
    ]:
        assert expected in flags
    # Credentials and TLS for both buses reach every command that uses them.
    for command in COMMANDS:
        for flag in ("--nats-tls-ca", "--nats-credentials", "--nats-password-file"):
            expected = (command, flag)
            assert expected in flags
    for command in ("run", "bridge", "train"):
        for flag in ("--kafka-security-protocol", "--kafka-sasl-mechanism", "--kafka-tls-ca"):
            assert (command, flag) in flags


@pytest.mark.parametrize(
    ("command", "option", "field"),
    options_with_fields(),
    ids=lambda value: value if isinstance(value, str) else getattr(value, "name", None),
)
def test_an_options_default_and_range_are_the_settings(
    command: str, option: click.Option, field: dataclasses.Field[Any]
) -> None:
    if option.is_flag:
        return  # on/off switches: their sense is the field's, checked by the wiring tests
    given = isinstance(option.default, int | float | str | Path)  # click marks none as UNSET
    if field.default is not dataclasses.MISSING and given:
        assert comparable(option.type.convert(option.default, None, None)) == comparable(
            field.default
        ), f"{command} {option.opts[0]} defaults differently from {field.name}"
    low, high = field.metadata.get("min"), field.metadata.get("max")
    kind = option.type
    if isinstance(kind, click.IntRange | click.FloatRange):
        assert (kind.min, kind.max) == (low, high), (
            f"{command} {option.opts[0]} ranges {kind.min}..{kind.max}, "
            f"the setting {field.name} {low}..{high}"
        )
