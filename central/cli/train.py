"""``proxima train``: an event lake (or a log file) in, a signed bundle out.

``--lake DIR`` trains on the lake out of core, on the engine ``--engine`` names (DuckDB by
default, bounded by ``--memory-limit``; Spark at ``--spark-master``). ``--data LOG`` first
writes the log into a temporary lake; ``--engine memory`` trains on the whole log in RAM
as the trainer did before the lake.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import click

from central.cli.engine_options import engine_options, engine_settings
from central.cli.errors import CommandError, reported_errors
from central.cli.progress import progress_bars, stage_reporter
from central.datasets import read_log
from central.trainer.pipeline import TrainerConfig, TrainResult, train_bundle
from central.training.lakefile import import_into_lake, lake_to_log
from central.training.pipeline import LakeTrainConfig, train_from_lake
from model_export.pack import write_bundle_file
from protocol.keys import load_private_key


@click.command()
@click.option(
    "--lake",
    type=click.Path(file_okay=False, path_type=Path),
    help="Event lake to train on (see 'proxima lake import').",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Event log file to train on instead of a lake (written into a temporary lake).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["diginetica", "csv"]),
    help="Format of --data: diginetica, or csv with a header naming session_id (or "
    "user_id), item_id, timestamp.",
)
@click.option("--skip-bad-rows", is_flag=True, help="Skip malformed rows of --data (counted).")
@click.option(
    "--days",
    type=click.IntRange(1, 100_000),
    help="Train on the lake's last N days (date partitions); default: all of it.",
)
@engine_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Bundle file to write.",
)
@click.option(
    "--signing-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="PROXIMA_SIGNING_KEY",
    show_envvar=True,
    help="Private key that signs the bundle (see 'proxima keys generate').",
)
@click.option(
    "--version",
    "bundle_version",
    type=click.IntRange(1, 2**63 - 1),
    help="Bundle version; must grow with every bundle. Default: seconds since the epoch.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def train(
    lake: Path | None,
    data: Path | None,
    fmt: str | None,
    skip_bad_rows: bool,
    days: int | None,
    out: Path,
    signing_key: Path | None,
    bundle_version: int | None,
    seed: int,
    **engine: Any,
) -> None:
    """Train a ranker on an event lake or log and write a signed model bundle."""
    if (lake is None) == (data is None):
        raise click.UsageError("give one of --lake DIR or --data LOG")
    if data is not None and fmt is None:
        raise click.UsageError("--data needs --format (csv or diginetica)")
    if signing_key is None:
        raise CommandError(
            "no signing key: pass --signing-key PATH or set PROXIMA_SIGNING_KEY "
            "(create one with 'proxima keys generate --out DIR')"
        )
    with reported_errors():
        key_pem = signing_key.read_bytes()
        load_private_key(key_pem)  # fail before hours of training, not after
        config = LakeTrainConfig(
            trainer=TrainerConfig(seed=seed), engine=engine_settings(**engine), days=days
        )
        version = bundle_version or int(time.time())
        with progress_bars() as bars:
            report = stage_reporter(bars)
            if data is not None:
                assert fmt is not None
                result = _train_on_file(data, fmt, skip_bad_rows, config, version, key_pem, report)
            else:
                assert lake is not None
                result = _train_on_lake(lake, config, version, key_pem, report)
        write_bundle_file(out, result.bundle)
    validation = result.manifest_metrics["validation"]
    click.echo(
        f"wrote {out} ({len(result.bundle):,} bytes) from {result.training['events']:,} events "
        f"in {result.training['seconds']:.1f} s"
    )
    for precision, figures in validation.items():
        click.echo(
            f"  validation {precision}: HR@20 {figures['hr_at_20']:.4f}  "
            f"MRR@20 {figures['mrr_at_20']:.4f}  ({figures['predictions']} predictions)"
        )


def _train_on_lake(
    lake: Path, config: LakeTrainConfig, version: int, key_pem: bytes, report: Any
) -> TrainResult:
    if config.engine.engine == "memory":
        return train_bundle(
            lake_to_log(lake),
            config.trainer,
            version=version,
            private_key_pem=key_pem,
            progress=report,
        )
    return train_from_lake(lake, config, version=version, private_key_pem=key_pem, progress=report)


def _train_on_file(
    data: Path,
    fmt: str,
    skip_bad_rows: bool,
    config: LakeTrainConfig,
    version: int,
    key_pem: bytes,
    report: Any,
) -> TrainResult:
    if config.engine.engine == "memory":
        log, stats = read_log(data, fmt, skip_bad_rows=skip_bad_rows)  # type: ignore[arg-type]
        _say_skipped(stats.rows_skipped, stats.rows_read)
        return train_bundle(
            log, config.trainer, version=version, private_key_pem=key_pem, progress=report
        )
    with tempfile.TemporaryDirectory(prefix="proxima-lake-", dir=config.engine.temp_dir) as root:
        _say_skipped(*import_into_lake(data, fmt, root, skip_bad_rows=skip_bad_rows))
        return train_from_lake(
            root, config, version=version, private_key_pem=key_pem, progress=report
        )


def _say_skipped(skipped: int, read: int) -> None:
    if skipped:
        click.echo(f"skipped {skipped} malformed rows of {read}", err=True)
