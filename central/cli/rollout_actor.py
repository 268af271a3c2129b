"""Who a rollout command acts as: ``--operator`` and ``--rollout-signing-key``.

The operator is read from the NATS credential the command connects with
(:func:`central.rollout.operator.operator_of`); ``--operator`` names one only when the
credential does not (a token, or no credential), and the OS user is the last resort. Both
are marked unverified in the audit. ``--rollout-signing-key`` signs the rollout records
the command writes, for edges that follow only signed records (``rollout_public_keys``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from central.rollout.operator import Actor, operator_of
from protocol.keys import load_private_key
from runtime.nats import NatsSettings

F = TypeVar("F", bound=Callable[..., Any])

_KEY: Final = "proxima.rollout_actor"


def actor_options(function: F) -> F:
    @functools.wraps(function)
    def wrapper(
        *args: Any, operator: str | None, rollout_signing_key: Path | None, **kwargs: Any
    ) -> Any:
        click.get_current_context().meta[_KEY] = (operator, rollout_signing_key)
        return function(*args, **kwargs)

    wrapper = click.option(
        "--rollout-signing-key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="PROXIMA_ROLLOUT_SIGNING_KEY",
        show_envvar=True,
        help="Private key that signs the rollout records written (edges with "
        "rollout_public_keys follow only signed records).",
    )(wrapper)
    wrapper = click.option(
        "--operator",
        envvar="PROXIMA_OPERATOR",
        show_envvar=True,
        help="Who you are, when the NATS credential names no user (recorded as unverified).",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


def command_actor(nats: NatsSettings) -> Actor:
    """The actor of the running command, connecting with ``nats``."""
    context = click.get_current_context(silent=True)
    found = context.meta.get(_KEY) if context is not None else None
    claimed, key_path = found if isinstance(found, tuple) else (None, None)
    signer = load_private_key(key_path.read_bytes()) if key_path is not None else None
    return Actor(operator_of(nats, claimed=claimed), signer)
