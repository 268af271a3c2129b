"""``proxima lake``: the event lake: write it from Kafka, import history, show, compact.

``write`` runs a lake writer until stopped (also part of ``proxima central run``);
``import`` loads an event log file (the formats of :mod:`central.datasets`); ``stats``
prints days, events, sessions, items and bytes; ``compact`` and ``retain`` run the
maintenance a writer runs on its own schedule. Errors print as ``error: ...``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from central.cli.errors import reported_errors
from central.cli.options import data_options
from central.cli.progress import progress_bars
from central.settings import LakeWriterSettings
from runtime.settings import load_settings, settings_options

log = logging.getLogger("proxima.central.lake")

_LAKE_DIR = click.Path(file_okay=False, path_type=Path)


@click.group("lake")
def lake() -> None:
    """The event lake: every event in Parquet, partitioned by event date."""


@lake.command("write")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML settings file (its [lake] table); flags and PROXIMA_* variables override it.",
)
@settings_options(LakeWriterSettings)
def write(config_file: Path | None, **flags: Any) -> None:
    """Write every event of the Kafka topic into the lake, exactly once, until stopped."""
    from central.cli.serving import serve
    from central.lake.writer import LakeWriter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with reported_errors():
        settings = load_settings(
            LakeWriterSettings, table="lake", file=config_file, env=os.environ, overrides=flags
        )
        writer = LakeWriter(settings)

        def started() -> None:
            log.info("lake writer running: %s into %s", settings.topic, settings.lake_dir)

        asyncio.run(serve([writer], watch=[writer.wait_stopped], on_started=started))
        status = writer.status
        log.info(
            "lake writer stopped: %d rows in %d commits, %d invalid records skipped",
            status.written, status.commits, status.invalid,
        )  # fmt: skip


@lake.command("import")
@data_options
@click.option("--lake", "lake_dir", type=_LAKE_DIR, required=True, help="Root of the lake.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_command(
    data: Path, fmt: str, skip_bad_rows: bool, lake_dir: Path, as_json: bool
) -> None:
    """Import an event log into the lake: all of it, or nothing if it fails."""
    from central.lake.importer import import_log

    with reported_errors(), progress_bars(enabled=not as_json) as progress:
        task = progress.add_task("importing events", total=None)

        def report(rows: int, done_bytes: int, total_bytes: int) -> None:
            progress.update(task, completed=done_bytes, total=total_bytes,
                            description=f"importing events ({rows:,})")  # fmt: skip

        result = import_log(
            data, fmt, lake_dir,  # type: ignore[arg-type]
            skip_bad_rows=skip_bad_rows, progress=report,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(
        f"imported {result.events:,} events ({result.rows_skipped:,} rows skipped) into "
        f"{result.files} files over {result.days} days of {lake_dir} in {result.seconds:.1f} s "
        f"({result.events / max(result.seconds, 1e-9):,.0f} events/s)"
    )


@lake.command("stats")
@click.option("--lake", "lake_dir", type=_LAKE_DIR, required=True, help="Root of the lake.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats(lake_dir: Path, as_json: bool) -> None:
    """Days, events, sessions, items and bytes, per day and in total."""
    from central.lake.stats import lake_stats

    with reported_errors():
        figures = lake_stats(lake_dir)
    if as_json:
        click.echo(json.dumps(figures.to_dict()))
        return
    click.echo(f"{'date':<12}{'events':>14}{'sessions':>12}{'items':>10}{'files':>7}{'bytes':>14}")
    for day in figures.per_day:
        click.echo(
            f"{day.date:<12}{day.events:>14,}{day.sessions:>12,}{day.items:>10,}"
            f"{day.files:>7,}{day.bytes:>14,}"
        )
    total = figures.total
    click.echo(
        f"{'total':<12}{total.events:>14,}{total.sessions:>12,}{total.items:>10,}"
        f"{total.files:>7,}{total.bytes:>14,}"
    )
    click.echo(f"{len(figures.per_day)} days")


@lake.command("compact")
@click.option("--lake", "lake_dir", type=_LAKE_DIR, required=True, help="Root of the lake.")
@click.option(
    "--min-files", type=click.IntRange(2, 100_000), default=2, show_default=True,
    help="Compact a day's files of one partition once there are this many.",
)  # fmt: skip
@click.option(
    "--retention-days", type=click.IntRange(0, 100_000), default=0, show_default=True,
    help="Also delete days older than this many days (0: keep all).",
)  # fmt: skip
def compact_command(lake_dir: Path, min_files: int, retention_days: int) -> None:
    """Compact small files (and apply retention) now, as a writer does on its schedule."""
    from central.lake.commit import Stager, recover
    from central.lake.layout import open_lake
    from central.lake.maintenance import apply_retention, compact, sweep

    with reported_errors():
        layout = open_lake(lake_dir)
        recover(layout)
        sweep(layout)
        deleted = apply_retention(layout, retention_days)
        stager = Stager(layout)
        try:
            done = compact(layout, stager, min_files=min_files)
        finally:
            stager.close()
    click.echo(
        f"compacted {sum(c.inputs for c in done)} files into {len(done)}; "
        f"deleted {len(deleted)} days"
    )
