"""``proxima rules push|status|rollback``: rules documents pushed to every edge through the
``proxima-rules`` KV, checked with the edge's own parser before anything is written.

Documents are immutable once pushed (pushing another document under a version already taken
is refused: bump ``version``); pushing the same one again only makes it active. The
``active`` pointer is changed by compare-and-set, so two operators cannot lose each other's
push. ``rollback`` makes the version before the active one in the push history active again
(or ``--to V``, any pushed version).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import nats
import nats.errors
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from central.cli.errors import CommandError, reported_errors
from central.cli.options import nats_connection, nats_option
from central.rollout.operator import Operator, operator_of
from edge_node.rules import RuleSet
from edge_node.rules.live import (
    ACTIVE_KEY,
    MAX_HISTORY,
    RULES_HISTORY,
    ActiveRules,
    doc_key,
)
from protocol.subjects import RULES_BUCKET
from runtime.supervisor import describe_error, redact

T = TypeVar("T")
_CAS_ATTEMPTS = 10


@click.group()
def rules() -> None:
    """Push rules documents to the edges, see which is active, roll back."""


_OPERATOR = click.option(
    "--operator",
    help="Who you are, when the NATS credential names no user (recorded as a claim).",
)


@rules.command()
@nats_option("")
@_OPERATOR
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def push(nats_url: str, operator: str | None, path: Path) -> None:
    """Validate a rules document (JSON or YAML) as the edges do, upload it, make it active."""
    with reported_errors():
        data = path.read_bytes()
        parsed = RuleSet.parse(data)
        key = doc_key(parsed.version)

    async def work(kv: KeyValue) -> ActiveRules:
        try:
            existing = await kv.get(key)
        except KeyNotFoundError:
            await kv.create(key, data)
        else:
            if existing.value != data:
                raise CommandError(
                    f"rules version {parsed.version} was pushed before with other content; "
                    "give the document a new version [version_taken]"
                )
        return await _set_active(kv, parsed.version, by=_operator(nats_url, operator))

    active = _run(nats_url, work, create=True)
    click.echo(f"rules {active.version} pushed and active ({len(parsed.document.rules)} rules)")


@rules.command()
@nats_option("")
@click.option("--json", "as_json", is_flag=True)
def status(nats_url: str, as_json: bool) -> None:
    """Show the active rules version and the push history."""

    async def work(kv: KeyValue) -> ActiveRules | None:
        return await _active(kv)

    active = _run(nats_url, work, create=False)
    if as_json:
        click.echo(json.dumps(None if active is None else json.loads(active.encode())))
        return
    if active is None:
        click.echo("no rules pushed yet")
        return
    who = f", by {active.by} ({active.by_via})" if active.by else ""
    click.echo(f"active: {active.version}  (since {active.updated_at} ms{who})")
    click.echo(f"history: {', '.join(active.history)}")


@rules.command()
@nats_option("")
@_OPERATOR
@click.option("--to", "target", help="The pushed version to make active (default: the previous).")
def rollback(nats_url: str, operator: str | None, target: str | None) -> None:
    """Make the previous pushed rules version (or --to V) active again."""

    async def work(kv: KeyValue) -> ActiveRules:
        active = await _active(kv)
        if active is None:
            raise CommandError("no rules pushed yet; nothing to roll back [no_rules]")
        version = target
        if version is None:
            position = (
                active.history.index(active.version) if active.version in active.history else 0
            )
            if position == 0:
                raise CommandError(
                    f"rules {active.version} is the oldest pushed; pass --to V [no_previous]"
                )
            version = active.history[position - 1]
        with reported_errors():
            key = doc_key(version)
        try:
            entry = await kv.get(key)
        except KeyNotFoundError as exc:
            raise CommandError(f"rules {version} were never pushed [unknown_version]") from exc
        with reported_errors():
            RuleSet.parse(entry.value or b"")
        return await _set_active(
            kv, version, keep_history=True, by=_operator(nats_url, operator)
        )

    active = _run(nats_url, work, create=False)
    click.echo(f"rules {active.version} active again")


async def _active(kv: KeyValue) -> ActiveRules | None:
    try:
        entry = await kv.get(ACTIVE_KEY)
    except KeyNotFoundError:
        return None
    return None if entry.value is None else ActiveRules.decode(entry.value)


def _operator(nats_url: str, claimed: str | None) -> Operator:
    with reported_errors():
        return operator_of(nats_connection(nats_url, name="proxima-rules-cli"), claimed=claimed)


async def _set_active(
    kv: KeyValue, version: str, *, keep_history: bool = False, by: Operator | None = None
) -> ActiveRules:
    for _ in range(_CAS_ATTEMPTS):
        try:
            entry = await kv.get(ACTIVE_KEY)
        except KeyNotFoundError:
            entry = None
        previous = ActiveRules.decode(entry.value) if entry and entry.value else None
        history = list(previous.history) if previous else []
        if not keep_history:
            history = [v for v in history if v != version] + [version]
        active = ActiveRules(
            version,
            tuple(history[-MAX_HISTORY:]),
            int(time.time() * 1000),
            by.name if by is not None else None,
            by.via if by is not None else None,
        )
        try:
            if entry is None:
                await kv.create(ACTIVE_KEY, active.encode())
            else:
                await kv.update(ACTIVE_KEY, active.encode(), last=entry.revision)
        except KeyWrongLastSequenceError:
            continue
        return active
    raise CommandError("the active rules kept changing under the push; try again [conflict]")


def _run(nats_url: str, work: Callable[[KeyValue], Awaitable[T]], *, create: bool) -> T:
    async def main() -> T:
        try:
            options = nats_connection(nats_url, name="proxima-rules-cli").connect_options()
            options.update(connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1)
            client = await nats.connect(**options)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise CommandError(
                f"cannot connect to NATS at {redact(nats_url)}: {describe_error(exc)}"
            ) from exc
        try:
            js = client.jetstream()
            try:
                kv = await js.key_value(RULES_BUCKET)
            except BucketNotFoundError:
                if not create:
                    raise CommandError("no rules pushed yet [no_rules]") from None
                kv = await js.create_key_value(bucket=RULES_BUCKET, history=RULES_HISTORY)
            return await work(kv)
        finally:
            await client.close()

    with reported_errors():
        return asyncio.run(main())
