"""``proxima keys``: signing keys for bundles."""

from __future__ import annotations

from pathlib import Path

import click

from central.cli.errors import reported_errors
from central.keys import write_keypair


@click.group()
def keys() -> None:
    """Manage the Ed25519 keys that sign model bundles."""


@keys.command("generate")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for signing.key (private, mode 0600) and signing.pub.",
)
@click.option("--force", is_flag=True, help="Replace existing key files.")
def generate_keys(out_dir: Path, force: bool) -> None:
    """Write a new signing key pair."""
    with reported_errors():
        private, public = write_keypair(out_dir, overwrite=force)
    click.echo(f"private key: {private} (keep it on the trainer only)")
    click.echo(f"public key:  {public} (give it to every edge)")
