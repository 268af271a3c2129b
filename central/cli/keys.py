"""``proxima keys``: signing keys for bundles and rollout records, named by key id."""

from __future__ import annotations

from pathlib import Path

import click

from central.cli.errors import reported_errors
from central.keys import key_id_of_file, keys_in, rotate_keypair, write_keypair

_DIRECTORY = click.Path(file_okay=False, path_type=Path)


@click.group()
def keys() -> None:
    """Manage the Ed25519 keys that sign model bundles (and rollout records)."""


@keys.command("generate")
@click.option(
    "--out",
    "out_dir",
    type=_DIRECTORY,
    required=True,
    help="Directory for signing.key (private, mode 0600) and signing.pub.",
)
@click.option("--force", is_flag=True, help="Replace existing key files.")
def generate_keys(out_dir: Path, force: bool) -> None:
    """Write a new signing key pair."""
    with reported_errors():
        private, public = write_keypair(out_dir, overwrite=force)
        kid = key_id_of_file(public)
    click.echo(f"private key: {private} (keep it on the trainer only)")
    click.echo(f"public key:  {public} (give it to every edge)")
    click.echo(f"key id:      {kid}")


@keys.command("rotate")
@click.option(
    "--dir",
    "directory",
    type=_DIRECTORY,
    required=True,
    help="Directory holding the current signing.key and signing.pub.",
)
def rotate_keys(directory: Path) -> None:
    """Replace the signing pair with a new one, keeping the old as signing-<id>.key/.pub.

    Give the new public key to every edge (trusted_public_keys) before the trainer signs
    with the new private key; revoke the old key id (revoked_key_ids) once no bundle an
    edge may be asked for is signed by it.
    """
    with reported_errors():
        rotation = rotate_keypair(directory)
    click.echo(f"new key {rotation.new_id}: {rotation.private}, {rotation.public}")
    click.echo(
        f"old key {rotation.old_id}: kept as {rotation.retired_private}, "
        f"{rotation.retired_public}"
    )
    click.echo(
        f"edges: trust both (public_key={rotation.public}, "
        f"trusted_public_keys={rotation.retired_public}); later revoked_key_ids="
        f"{rotation.old_id}"
    )


@keys.command("list")
@click.option("--dir", "directory", type=_DIRECTORY, required=True, help="Key directory.")
def list_keys(directory: Path) -> None:
    """The key id of every public key file in a directory."""
    with reported_errors():
        found = keys_in(directory)
    if not found:
        click.echo(f"no public keys in {directory}")
    for kid, path in found:
        click.echo(f"{kid}  {path}")


@keys.command("id")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def key_ids(paths: tuple[Path, ...]) -> None:
    """The key id of each key file (public or private) given."""
    with reported_errors():
        for path in paths:
            click.echo(f"{key_id_of_file(path)}  {path}")
