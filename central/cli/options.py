"""Options shared by several commands."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from central.cli.errors import reported_errors
from protocol.errors import ProximaError

if TYPE_CHECKING:
    from central.kafka_settings import KafkaSecurity
    from central.rollout.operations import RolloutPolicy
    from runtime.nats import NatsSettings

F = TypeVar("F", bound=Callable[..., Any])


def data_options(function: F) -> F:
    return _data_options(function, required=True)


def optional_data_options(function: F) -> F:
    """``--data``/``--format`` for a command that can also read its events elsewhere."""
    return _data_options(function, required=False)


def _data_options(function: F, *, required: bool) -> F:
    function = click.option(
        "--skip-bad-rows",
        is_flag=True,
        help="Skip malformed rows (counted) instead of stopping at the first.",
    )(function)
    function = click.option(
        "--format",
        "fmt",
        type=click.Choice(["diginetica", "csv"]),
        required=required,
        help="diginetica: session_id;user_id;item_id;timeframe;eventdate. csv: a "
        "header naming session_id (or user_id),item_id,timestamp.",
    )(function)
    function = click.option(
        "--data",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=required,
        help="Event log to read.",
    )(function)
    return function


def public_key_option(required: bool) -> Callable[[F], F]:
    return click.option(
        "--public-key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="PROXIMA_PUBLIC_KEY",
        required=required,
        show_envvar=True,
        help="Public key that bundles must verify against.",
    )


def nats_option(purpose: str) -> Callable[[F], F]:
    """``--nats`` and the NATS credential and TLS options of
    :class:`runtime.nats.NatsClientSettings`; build the connection settings with
    :func:`nats_connection`."""
    from runtime.nats import NatsClientSettings

    url = click.option(
        "--nats",
        "nats_url",
        envvar="PROXIMA_NATS_URL",
        show_envvar=True,
        default="nats://127.0.0.1:4222",
        show_default=True,
        help=f"NATS server URL(s), comma-separated{purpose}.",
    )
    return lambda function: url(_settings_group(NatsClientSettings, _NATS_KEY)(function))


def kafka_option(function: F) -> F:
    """``--kafka`` and the Kafka security options of
    :class:`central.kafka_settings.KafkaSecurity`; read them with :func:`kafka_security`."""
    from central.kafka_settings import DEFAULT_BOOTSTRAP, KafkaSecurity

    return click.option(
        "--kafka",
        "kafka_bootstrap",
        envvar="PROXIMA_KAFKA_BOOTSTRAP",
        show_envvar=True,
        default=DEFAULT_BOOTSTRAP,
        show_default=True,
        help="Kafka bootstrap servers, HOST:PORT comma-separated.",
    )(_settings_group(KafkaSecurity, _KAFKA_KEY)(function))


_NATS_KEY = "proxima.nats_client"
_KAFKA_KEY = "proxima.kafka_security"


def _settings_group(cls: type[Any], key: str) -> Callable[[F], F]:
    """Options made from the fields of ``cls``; the command does not see them as arguments:
    they are loaded (flags over ``PROXIMA_*`` variables) into one ``cls`` kept for the
    command's run in its click context under ``key``."""
    from runtime.settings import load_settings, settings_options

    names = {f.name for f in dataclasses.fields(cls)}

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names if name in kwargs}
            with reported_errors():
                loaded = load_settings(cls, table="bridge", env=os.environ, overrides=given)
            click.get_current_context().meta[key] = loaded
            return function(*args, **kwargs)

        return settings_options(cls)(wrapper)  # type: ignore[return-value]

    return decorate


def nats_connection(url: str, *, name: str) -> NatsSettings:
    """The NATS settings of ``url`` with the credentials and TLS the command was given."""
    from runtime.nats import NO_NATS_CREDENTIALS, NatsClientSettings

    context = click.get_current_context(silent=True)
    found = context.meta.get(_NATS_KEY) if context is not None else None
    credentials = found if isinstance(found, NatsClientSettings) else NO_NATS_CREDENTIALS
    try:
        return credentials.nats_connection(url, name=name)
    except ProximaError as exc:  # a bad URL or credential option is a usage error (exit 2)
        hint = "--nats" if exc.field in (None, "nats_url", "servers") else None
        raise click.BadParameter(exc.message, param_hint=hint) from exc


def kafka_security() -> KafkaSecurity:
    """The Kafka security settings the command was given (plaintext when none)."""
    from central.kafka_settings import PLAINTEXT, KafkaSecurity

    context = click.get_current_context(silent=True)
    found = context.meta.get(_KAFKA_KEY) if context is not None else None
    return found if isinstance(found, KafkaSecurity) else PLAINTEXT


def signing_key_option(function: F) -> F:
    return click.option(
        "--signing-key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="PROXIMA_SIGNING_KEY",
        show_envvar=True,
        help="Private key that signs bundles (see 'proxima keys generate').",
    )(function)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.fullmatch(str(value).strip())
        if match is None or float(match.group(1)) <= 0:
            self.fail(f"{value!r} is not a duration such as 90s, 10m or 1h", param, ctx)
        return float(match.group(1)) * _UNIT_S[match.group(2)]


def canary_options(function: F) -> F:
    """How a continuously trained bundle is rolled out; without --canary-steps it is promoted."""
    options = [
        click.option("--canary-steps", help="Roll each new bundle out in these canary percent "
                      "steps (e.g. 5,25,50,100) instead of promoting it at once."),
        click.option("--canary-interval", type=Duration(), default="10m", show_default=True,
                     help="How long each canary step runs."),
        click.option("--canary-max-p99-ms", type=click.FloatRange(0, min_open=True),
                     help="Roll back a canary whose p99 answer time is above this."),
        click.option("--canary-max-error-rate", type=click.FloatRange(0, 1), default=0.01,
                     show_default=True, help="Roll back a canary failing more often."),
        click.option("--canary-min-ctr-ratio", type=click.FloatRange(0, min_open=True),
                     help="Roll back a canary whose CTR is confidently below this ratio."),
        click.option("--canary-min-requests", type=click.IntRange(0), default=100,
                     show_default=True, help="Canary answers a step needs to advance."),
        click.option("--canary-shadow", is_flag=True,
                     help="Score each new bundle unseen for one step first."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def rollout_policy(values: Mapping[str, Any]) -> RolloutPolicy | None:
    """The policy ``canary_options`` describe, or None when bundles are promoted at once."""
    from central.rollout.operations import RolloutPolicy
    from central.rollout.plan import Guardrails, RolloutPlanError, parse_steps

    if not values.get("canary_steps"):
        return None
    try:
        return RolloutPolicy(
            steps=parse_steps(values["canary_steps"]),
            interval_s=values["canary_interval"],
            guardrails=Guardrails(
                max_p99_ms=values["canary_max_p99_ms"],
                max_error_rate=values["canary_max_error_rate"],
                min_ctr_ratio=values["canary_min_ctr_ratio"],
                min_requests=values["canary_min_requests"],
            ),
            shadow=values["canary_shadow"],
        )
    except RolloutPlanError as exc:
        raise click.BadParameter(str(exc), param_hint="--canary-*") from exc
