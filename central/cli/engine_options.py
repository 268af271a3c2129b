"""The options that choose and bound the query engine of ``train`` and ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from central.training.engine import ENGINES, MIB, EngineSettings, parse_size

F = TypeVar("F", bound=Callable[..., Any])


def engine_options(function: F) -> F:
    options = [
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="duckdb",
            show_default=True,
            help="Where tables and examples are computed: duckdb (embedded, out of core), "
            "spark (--spark-master), or memory (the whole log in RAM).",
        ),
        click.option(
            "--memory-limit",
            default="2GiB",
            show_default=True,
            help="Memory the engine may use before it spills to disk (e.g. 512MiB, 4GiB).",
        ),
        click.option(
            "--threads",
            type=click.IntRange(0, 1024),
            default=0,
            show_default=True,
            help="Engine threads and replay processes; 0: every core.",
        ),
        click.option(
            "--temp-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where the engine spills (default: the system's temporary directory).",
        ),
        click.option(
            "--spark-master",
            default="local[*]",
            show_default=True,
            help="Spark master URL for --engine spark (spark://HOST:7077, yarn, local[*]).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def engine_settings(
    engine: str, memory_limit: str, threads: int, temp_dir: Path | None, spark_master: str
) -> EngineSettings:
    limit = parse_size(memory_limit, field="memory_limit")
    if limit < 64 * MIB:
        raise click.BadParameter("must be at least 64MiB", param_hint="--memory-limit")
    return EngineSettings(
        engine=engine,
        memory_limit_mib=limit // MIB,
        threads=threads,
        temp_dir=temp_dir,
        spark_master=spark_master,
    )
