"""``proxima train``: an event log in, a signed bundle out."""

from __future__ import annotations

import time
from pathlib import Path

import click

from central.cli.errors import CommandError, reported_errors
from central.cli.options import data_options
from central.cli.progress import progress_bars, stage_reporter
from central.datasets import read_log
from central.trainer.pipeline import TrainerConfig, train_bundle
from model_export.pack import write_bundle_file
from protocol.keys import load_private_key


@click.command()
@data_options
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
    data: Path,
    fmt: str,
    skip_bad_rows: bool,
    out: Path,
    signing_key: Path | None,
    bundle_version: int | None,
    seed: int,
) -> None:
    """Train a ranker on an event log and write a signed model bundle."""
    if signing_key is None:
        raise CommandError(
            "no signing key: pass --signing-key PATH or set PROXIMA_SIGNING_KEY "
            "(create one with 'proxima keys generate --out DIR')"
        )
    with reported_errors():
        key_pem = signing_key.read_bytes()
        load_private_key(key_pem)  # fail before hours of training, not after
        log, stats = read_log(data, fmt, skip_bad_rows=skip_bad_rows)  # type: ignore[arg-type]
        if stats.rows_skipped:
            click.echo(
                f"skipped {stats.rows_skipped} malformed rows of {stats.rows_read}", err=True
            )
        with progress_bars() as bars:
            result = train_bundle(
                log,
                TrainerConfig(seed=seed),
                version=bundle_version or int(time.time()),
                private_key_pem=key_pem,
                progress=stage_reporter(bars),
            )
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
