"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

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
