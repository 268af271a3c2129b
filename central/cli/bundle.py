"""``proxima bundle``: look inside a bundle, and check it as an edge would."""

from __future__ import annotations

import json
from pathlib import Path

import click

from central.cli.errors import reported_errors
from central.cli.options import public_key_option
from protocol.bundle import inspect_bundle, read_bundle
from protocol.keys import load_public_key
from protocol.serving import ServingModel

_BUNDLE = click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))


@click.group()
def bundle() -> None:
    """Inspect and verify model bundles."""


@bundle.command()
@_BUNDLE
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(path: Path, as_json: bool) -> None:
    """Show a bundle's manifest (without verifying it: use 'verify' for that)."""
    with reported_errors():
        manifest = inspect_bundle(path.read_bytes())
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
        return
    ranker = manifest.ranker
    click.echo(
        f"bundle version {manifest.version}  created {manifest.created_at}  key {manifest.key_id}"
    )
    click.echo(
        f"feature schema {manifest.feature_schema_version}  rules {manifest.rules_version or '-'}"
    )
    click.echo(
        f"ranker: serves {ranker.get('precision')} ({ranker.get('serve')}); "
        f"quantized operators: {', '.join(ranker.get('quantized_operators') or []) or 'none'}"
    )
    if ranker.get("quantization_note"):
        click.echo(f"  {ranker['quantization_note']}")
    for precision, figures in (manifest.metrics.get("validation") or {}).items():
        hr, mrr = figures["hr_at_20"], figures["mrr_at_20"]
        click.echo(f"validation {precision}: HR@20 {hr:.4f}  MRR@20 {mrr:.4f}")
    training = manifest.training
    click.echo(
        f"trained on {training.get('events', '?'):,} events, {training.get('sessions', '?'):,} "
        f"sessions, {training.get('items', '?'):,} items"
    )
    click.echo("parts:")
    for name, info in sorted(manifest.parts.items()):
        click.echo(f"  {name:<36} {info.size:>12,}  {info.sha256[:16]}")


@bundle.command()
@_BUNDLE
@public_key_option(required=True)
def verify(path: Path, public_key: Path) -> None:
    """Check signature, manifest, every part's hash, and that an edge can load it."""
    with reported_errors():
        key = load_public_key(public_key.read_bytes())
        checked = read_bundle(path.read_bytes(), key)
        model = ServingModel.from_bundle(checked)
    click.echo(
        f"ok: bundle version {model.version} verifies ({len(checked.parts)} parts, "
        f"serves {model.precision}, {model.tables.n_items:,} items)"
    )
