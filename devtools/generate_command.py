"""``proxima generate``: a synthetic shop log for load and scale work."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from central.cli.errors import CommandError, reported_errors
from devtools.loggen import GeneratorConfig, generate_file
from devtools.loggen import generate as generate_log


@click.command()
@click.option("--sessions", type=click.IntRange(1, 100_000_000), required=True)
@click.option("--items", type=click.IntRange(1), default=20_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--days", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write (default: standard output).",
)
def generate(sessions: int, items: int, seed: int, days: float, out: Path | None) -> None:
    """Write a realistic synthetic shop log in the generic CSV format."""
    try:
        config = GeneratorConfig(sessions=sessions, items=items, seed=seed, days=days)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    with reported_errors():
        stats = generate_file(out, config) if out else generate_log(sys.stdout, config)
    if out:
        click.echo(f"wrote {out}: {stats.events:,} events in {stats.sessions:,} sessions", err=True)
