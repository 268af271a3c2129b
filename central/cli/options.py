"""Options shared by several commands."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from central.rollout.operations import RolloutPolicy

F = TypeVar("F", bound=Callable[..., Any])


def data_options(function: F) -> F:
    function = click.option(
        "--skip-bad-rows",
        is_flag=True,
        help="Skip malformed rows (counted) instead of stopping at the first.",
    )(function)
    function = click.option(
        "--format",
        "fmt",
        type=click.Choice(["diginetica", "csv"]),
        required=True,
        help="diginetica: session_id;user_id;item_id;timeframe;eventdate. csv: a "
        "header naming session_id (or user_id),item_id,timestamp.",
    )(function)
    function = click.option(
        "--data",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
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
    return click.option(
        "--nats",
        "nats_url",
        envvar="PROXIMA_NATS_URL",
        show_envvar=True,
        default="nats://127.0.0.1:4222",
        show_default=True,
        help=f"NATS server URL(s), comma-separated{purpose}.",
    )


def kafka_option(function: F) -> F:
    from central.kafka_settings import DEFAULT_BOOTSTRAP

    return click.option(
        "--kafka",
        "kafka_bootstrap",
        envvar="PROXIMA_KAFKA_BOOTSTRAP",
        show_envvar=True,
        default=DEFAULT_BOOTSTRAP,
        show_default=True,
        help="Kafka bootstrap servers, HOST:PORT comma-separated.",
    )(function)


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
