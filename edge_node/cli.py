"""``proxima-edge serve``: the edge node's own entry point (``proxima edge serve`` is an alias).

The options of ``serve`` are generated from the fields of
:class:`~edge_node.config.EdgeSettings` (:func:`runtime.settings.settings_options`): a flag
per setting, with its help, default and range from the one declaration; ``--nats`` sets
``nats_url``. Secrets (``nats_password``, ``nats_token``, ``api_keys``) have no flag: they
come from the settings file or ``PROXIMA_*`` variables. Flags beat variables, variables
beat the file. The environment is read here, and nowhere else in the edge.

This module imports nothing of ``central``: the edge image ships without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from edge_node.config import EdgeSettings
from protocol.errors import ProximaError
from runtime.settings import settings_options


class EdgeCommandError(click.ClickException):
    """A start-up failure the operator can act on: ``error: message (field) [code]``, exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def edge() -> None:
    """Run an edge node."""


@edge.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML settings file (its [edge] table, or the whole file when it has no tables); "
    "flags and PROXIMA_* variables override it.",
)
@settings_options(EdgeSettings)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Serve recommendations from a verified bundle (verified before the port opens)."""
    from edge_node.app import prepare
    from edge_node.server import serve as run

    try:
        settings = EdgeSettings.load(file=config_file, env=os.environ, overrides=flags)
        prepared = prepare(settings)
    except ProximaError as exc:
        where = f" ({exc.field})" if exc.field else ""
        raise EdgeCommandError(f"{exc.message}{where} [{exc.code}]") from exc
    run(settings, prepared)


def main() -> None:
    """The ``proxima-edge`` console script."""
    edge(prog_name="proxima-edge")
