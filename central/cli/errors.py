"""Turns any :class:`ProximaError`, and OSError, into a one-line CLI message and exit status 1.

The message is ``error: message (field) [code]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from protocol.errors import ProximaError


class CommandError(click.ClickException):
    """A failure the user can act on: printed as ``error: ...``, exit status 1."""

    def format_message(self) -> str:
        return self.message

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@contextmanager
def reported_errors() -> Iterator[None]:
    try:
        yield
    except ProximaError as exc:
        where = f" ({exc.field})" if exc.field else ""
        raise CommandError(f"{exc.message}{where} [{exc.code}]") from exc
    except OSError as exc:
        name = f" {exc.filename}" if exc.filename else ""
        raise CommandError(f"{exc.strerror or exc}{name}") from exc
