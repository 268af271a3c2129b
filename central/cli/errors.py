"""Turns the packages' errors into one-line CLI messages and exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from central.errors import CentralError
from model_export.errors import ModelExportError
from protocol.errors import ProtocolError


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
    except ProtocolError as exc:
        where = f" ({exc.field})" if exc.field else ""
        raise CommandError(f"{exc.message}{where} [{exc.code}]") from exc
    except (CentralError, ModelExportError) as exc:
        raise CommandError(f"{exc} [{exc.code}]") from exc
    except OSError as exc:
        name = f" {exc.filename}" if exc.filename else ""
        raise CommandError(f"{exc.strerror or exc}{name}") from exc
