"""``proxima catalog``: serve the catalog API, import a catalog file, show or set one item.

``import``, ``show`` and ``set`` write the ``proxima-catalog`` bucket directly over NATS,
through the same store (ordering, compare-and-set, tombstones) the API uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import nats
import nats.errors

from central.catalog.errors import CatalogUnavailableError
from central.catalog.rows import read_rows, typed_fields
from central.catalog.store import CatalogStore
from central.cli.errors import CommandError, reported_errors
from central.cli.options import nats_connection, nats_option
from central.cli.progress import progress_bars
from protocol.catalog import check_item_id, validate_item, validate_patch
from runtime.supervisor import describe_error, redact

T = TypeVar("T")
_BATCH = 500
_MAX_REPORTED = 20


@click.group()
def catalog() -> None:
    """Feed and inspect the item catalog the edges filter and rank with."""


@catalog.command()
@nats_option(": the catalog bucket lives there")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8091, show_default=True)
@click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path),
    help="File with the API's bearer token (or set PROXIMA_CATALOG_TOKEN).",
)  # fmt: skip
@click.option(
    "--webhook-secret-file", type=click.Path(dir_okay=False, path_type=Path),
    help="File with the webhook's shared secret (or set PROXIMA_WEBHOOK_SECRET).",
)  # fmt: skip
def serve(
    nats_url: str, host: str, port: int, token_file: Path | None, webhook_secret_file: Path | None
) -> None:
    """Serve PUT/PATCH/DELETE /v1/catalog/items and the signed webhook until stopped."""
    from central.catalog.service import CatalogService
    from central.catalog.settings import CatalogSettings
    from central.cli.serving import serve as serve_roles

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with reported_errors():
        settings = CatalogSettings.load(
            env=os.environ,
            overrides={
                "nats_url": nats_url, "catalog_host": host, "catalog_port": port,
                "catalog_token_file": token_file, "webhook_secret_file": webhook_secret_file,
            },
        )  # fmt: skip
        service = CatalogService(settings)
        asyncio.run(
            serve_roles([service], on_started=lambda: click.echo(f"catalog API on {service.url}"))
        )


@catalog.command("import")
@nats_option("")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-bad", is_flag=True, help="Import the good rows even when some are bad.")
def import_file(nats_url: str, path: Path, skip_bad: bool) -> None:
    """Import a CSV or JSONL file of items; bad rows are reported by line."""
    with reported_errors():
        rows = list(read_rows(path))
    bad = [row.bad for row in rows if row.bad is not None]
    for problem in bad[:_MAX_REPORTED]:
        click.echo(f"{path}:{problem.describe()}", err=True)
    if len(bad) > _MAX_REPORTED:
        click.echo(f"... and {len(bad) - _MAX_REPORTED} more bad rows", err=True)
    if bad and not skip_bad:
        raise CommandError(f"{len(bad)} bad rows; nothing imported (--skip-bad imports the rest)")
    items = [row.item for row in rows if row.item is not None]

    async def write(store: CatalogStore) -> dict[str, int]:
        counts: dict[str, int] = {}
        with progress_bars() as progress:
            task = progress.add_task(f"importing {path.name}", total=len(items))
            for start in range(0, len(items), _BATCH):
                for outcome in await store.put(items[start : start + _BATCH]):
                    counts[outcome.status] = counts.get(outcome.status, 0) + 1
                progress.update(task, completed=min(start + _BATCH, len(items)))
        return counts

    counts = _run(nats_url, write)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
    click.echo(f"{len(items)} items read: {summary}; {len(bad)} bad rows skipped" if bad else
               f"{len(items)} items read: {summary}")  # fmt: skip


@catalog.command()
@nats_option("")
@click.argument("item_id")
def show(nats_url: str, item_id: str) -> None:
    """Print an item as the catalog holds it (JSON)."""
    with reported_errors():
        check_item_id(item_id)

    async def read(store: CatalogStore) -> dict[str, Any] | None:
        stored = await store.get(item_id)
        return None if stored is None else {**stored.item.to_dict(), "revision": stored.revision}

    found = _run(nats_url, read)
    if found is None:
        raise CommandError(f"no item {item_id!r} in the catalog [item_not_found]")
    click.echo(json.dumps(found, indent=2, sort_keys=True))


@catalog.command("set")
@nats_option("")
@click.argument("item_id")
@click.argument("assignments", nargs=-1, required=True)
def set_fields(nats_url: str, item_id: str, assignments: tuple[str, ...]) -> None:
    """Set fields of an item, e.g. ``proxima catalog set sku-1 price=9.5 available=false``
    (creates the item when it is new; ``attr.NAME=VALUE`` sets an attribute)."""
    pairs = []
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep:
            raise CommandError(f"{assignment!r} is not field=value")
        pairs.append((name, value))
    with reported_errors():
        fields = typed_fields(pairs)
        fields["id"] = check_item_id(item_id)

    async def write(store: CatalogStore) -> dict[str, Any]:
        stored = await store.get(item_id)
        if stored is None:
            outcome = (await store.put([validate_item(fields)]))[0]
        else:
            if "attributes" in fields:
                fields["attributes"] = {**stored.item.attributes, **fields["attributes"]}
            outcome = (await store.patch([validate_patch(fields)]))[0]
        return outcome.to_dict()

    click.echo(json.dumps(_run(nats_url, write), sort_keys=True))


def _run(nats_url: str, work: Callable[[CatalogStore], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            options = nats_connection(nats_url, name="proxima-catalog-cli").connect_options()
            options.update(connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False)
            client = await nats.connect(**options)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise CatalogUnavailableError(
                f"cannot connect to NATS at {redact(nats_url)}: {describe_error(exc)}"
            ) from exc
        try:
            return await work(await CatalogStore.open(client.jetstream()))
        finally:
            await client.close()

    with reported_errors():
        return asyncio.run(main())
