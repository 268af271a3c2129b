"""``proxima edge serve``: run an edge node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from central.cli.errors import CommandError
from edge_node.errors import SettingsError


@click.group()
def edge() -> None:
    """Run an edge node."""


@edge.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML settings file ([edge] table); flags and PROXIMA_* variables override it.",
)
@click.option(
    "--bundle", type=click.Path(dir_okay=False, path_type=Path), help="Bundle file to serve."
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Public key bundles must verify against.",
)
@click.option("--region", help="Region name (letters, digits, _ and -).")
@click.option("--node", help="Node name within the region.")
@click.option(
    "--nats",
    "nats_url",
    help="NATS URL(s), comma-separated: publish events to JetStream and follow the region's "
    "rollout for bundles (instead of, or besides, --bundle). Env: PROXIMA_NATS_URL.",
)
@click.option("--redis", help="Redis URL: share session windows with the region's other replicas.")
@click.option(
    "--rules",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rules document (JSON or YAML).",
)
@click.option("--host", help="Address to listen on [127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on [8080].")
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where accepted events wait for the bus [./proxima-spool].",
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Serve recommendations from a verified bundle (verified before the port opens)."""
    from edge_node.app import prepare
    from edge_node.config import EdgeSettings
    from edge_node.server import serve as run

    try:
        settings = EdgeSettings.load(file=config_file, env=os.environ, overrides=flags)
        prepared = prepare(settings)
    except SettingsError as exc:
        raise CommandError(exc.message) from exc
    run(settings, prepared)
