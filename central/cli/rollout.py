"""``proxima rollout start|status|pause|resume|abort`` and ``proxima rollback``.

These write plans to the bus; the controller (``proxima central controller``, also part
of ``proxima central run``) walks them from edge telemetry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
import nats
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from rich.console import Console
from rich.table import Table

from central.cli.errors import CommandError, reported_errors
from central.cli.options import Duration, nats_connection, nats_option
from central.cli.rollout_actor import actor_options, command_actor
from central.outcomes.offpolicy import GateSettings
from central.outcomes.ope import Estimator
from central.rollout.offpolicy_gate import OffPolicyRequirement, check_offpolicy
from central.rollout.operations import (
    RolloutRequest,
    abort,
    pause,
    resume,
    rollback,
    start_rollout,
)
from central.rollout.operator import Actor, label
from central.rollout.plan import Guardrails, RolloutPlan, RolloutPlanError, parse_steps
from central.rollout.store import audit_entries, read_edge_record, read_plans
from protocol.subjects import check_token
from runtime.supervisor import redact

T = TypeVar("T")


def _regions(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        return tuple(check_token(r.strip(), "region") for r in text.split(",") if r.strip())
    except Exception as exc:
        raise click.BadParameter(str(exc), param_hint="--region(s)") from exc


Action = Callable[[JetStreamContext, Actor], Awaitable[T]]


async def _with_bus(nats_url: str, action: Action[T]) -> T:
    settings = nats_connection(nats_url, name="proxima-rollout-cli")
    actor = command_actor(settings)
    options = settings.connect_options() | {"allow_reconnect": False, "max_reconnect_attempts": 1}
    try:
        client: NatsClient = await nats.connect(**options)
    except Exception as exc:
        raise CommandError(f"cannot reach NATS at {redact(nats_url)}: {redact(str(exc))}") from exc
    try:
        return await action(client.jetstream(), actor)
    finally:
        await client.close()


def _run(nats_url: str, action: Action[T]) -> T:
    with reported_errors():
        return asyncio.run(_with_bus(nats_url, action))


@click.group()
def rollout() -> None:
    """Ship a bundle region by region: canary steps, guardrails, automatic rollback."""


@rollout.command("start")
@click.argument("version", type=click.IntRange(1))
@click.option("--regions", required=True, help="Regions to roll out in, e.g. eu,us.")
@click.option(
    "--steps", default="5,25,50,100", show_default=True, help="Canary percent of each step."
)
@click.option(
    "--step-interval",
    type=Duration(),
    default="10m",
    show_default=True,
    help="How long each step runs before it may advance (90s, 10m, 1h).",
)
@click.option("--max-p99-ms", type=click.FloatRange(0, min_open=True), help="Canary p99 ceiling.")
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Share of canary answers allowed to fail.",
)
@click.option(
    "--min-ctr-ratio",
    type=click.FloatRange(0, min_open=True),
    help="Roll back when canary CTR / stable CTR is confidently below this.",
)
@click.option("--confidence", type=click.FloatRange(0.5, 1, max_open=True), default=0.95,
              show_default=True, help="Confidence of the CTR comparison.")  # fmt: skip
@click.option("--min-requests", type=click.IntRange(0), default=100, show_default=True,
              help="Canary answers a step needs before it may advance.")  # fmt: skip
@click.option("--min-impressions", type=click.IntRange(0), default=200, show_default=True,
              help="Impressions per variant before CTR is judged.")  # fmt: skip
@click.option("--shadow", is_flag=True, help="Score the canary unseen for one step first.")
@click.option(
    "--require-offpolicy",
    "offpolicy_lake",
    type=click.Path(file_okay=False, path_type=Path),
    help="Start only if, on the logged answers of this event lake, the bundle is estimated "
    "off-policy to be no worse than each region's stable bundle.",
)
@click.option(
    "--offpolicy-estimator",
    type=click.Choice(["ips", "snips", "dr"]),
    default="dr",
    show_default=True,
    help="With --require-offpolicy: the estimator the gate judges by.",
)
@click.option(
    "--offpolicy-margin",
    type=click.FloatRange(0, 1e6),
    default=0.0,
    show_default=True,
    help="With --require-offpolicy: reward per answer the bundle may lose.",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="PROXIMA_PUBLIC_KEY",
    help="With --require-offpolicy: the key bundles must verify against.",
)
@nats_option("")
@actor_options
def start(
    version: int,
    regions: str,
    steps: str,
    step_interval: float,
    max_p99_ms: float | None,
    max_error_rate: float,
    min_ctr_ratio: float | None,
    confidence: float,
    min_requests: int,
    min_impressions: int,
    shadow: bool,
    offpolicy_lake: Path | None,
    offpolicy_estimator: Estimator,
    offpolicy_margin: float,
    public_key: Path | None,
    nats_url: str,
) -> None:
    """Start rolling bundle VERSION out in each region, step by step."""
    requirement = None
    if offpolicy_lake is not None:
        if public_key is None:
            raise click.UsageError("--require-offpolicy needs --public-key (or PROXIMA_PUBLIC_KEY)")
        requirement = OffPolicyRequirement(
            offpolicy_lake,
            public_key,
            GateSettings(estimator=offpolicy_estimator, margin=offpolicy_margin),
        )
    try:
        request = RolloutRequest(
            version=version,
            regions=_regions(regions) or _fail("--regions names no region"),
            steps=parse_steps(steps),
            interval_s=step_interval,
            guardrails=Guardrails(
                max_p99_ms=max_p99_ms,
                max_error_rate=max_error_rate,
                min_ctr_ratio=min_ctr_ratio,
                confidence=confidence,
                min_requests=min_requests,
                min_impressions=min_impressions,
            ),
            shadow=shadow,
        )
    except RolloutPlanError as exc:
        raise click.BadParameter(str(exc)) from exc
    async def gated_start(js: JetStreamContext, actor: Actor) -> list[RolloutPlan]:
        if requirement is not None:
            results = await check_offpolicy(js, version, request.regions, requirement)
            for stable, result in results.items():
                difference = result.difference[requirement.gate.estimator]
                click.echo(
                    f"off-policy gate passed against stable {stable}: "
                    f"{requirement.gate.estimator} {difference.estimate:+.4f} per answer "
                    f"[{difference.low:+.4f}, {difference.high:+.4f}], {result.answers} answers"
                )
        return await start_rollout(js, request, actor)

    plans = _run(nats_url, gated_start)
    for plan in plans:
        first = "shadow" if plan.in_shadow else f"{plan.percent}%"
        click.echo(
            f"{plan.region}: rolling out bundle {plan.version} over {plan.previous_stable}, "
            f"first step {first}, {len(plan.stages())} steps of {step_interval:g}s"
        )


def _fail(message: str) -> tuple[str, ...]:
    raise click.BadParameter(message)


@rollout.command("status")
@click.option("--region", "regions", help="Only these regions (comma-separated).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {region: {plan, edges}}.")
@click.option("--audit", "audit_limit", type=click.IntRange(0, 1000), default=0,
              help="Also show the newest N audit entries per region.")  # fmt: skip
@nats_option("")
def status(regions: str | None, as_json: bool, audit_limit: int, nats_url: str) -> None:
    """Show each region's rollout: step, guardrails, and the figures behind every decision."""
    wanted = set(_regions(regions))

    async def gather(js: JetStreamContext, actor: Actor) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for region, (plan, _) in (await read_plans(js)).items():
            if wanted and region not in wanted:
                continue
            record, _ = await read_edge_record(js, region)
            found[region] = {
                "plan": asdict(plan),
                "edges": None if record is None else asdict(record),
                "audit": await audit_entries(js, region, audit_limit) if audit_limit else [],
            }
        return found

    found = _run(nats_url, gather)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no rollouts" + (f" in {', '.join(sorted(wanted))}" if wanted else ""))
        return
    console = Console(highlight=False)
    for region in sorted(found):
        _print_region(console, region, found[region])


def _print_region(console: Console, region: str, found: dict[str, Any]) -> None:
    plan = RolloutPlan.decode(json.dumps(found["plan"]).encode())
    edges = found["edges"] or {}
    stages = " → ".join(
        ("shadow" if shadow else f"{p}%") + ("*" if i == plan.step and plan.active else "")
        for i, (p, shadow) in enumerate(plan.stages())
    )
    elapsed = time.time() - plan.step_started_at
    console.print(
        f"[bold]{region}[/]: bundle {plan.version} over {plan.previous_stable} — "
        f"[bold]{plan.status}[/]" + (f" ({plan.reason})" if plan.reason and not plan.active else "")
    )
    progress = f", {elapsed:.0f}s of {plan.interval_s:g}s" if plan.active else ""
    console.print(f"  steps {stages}; step {plan.step + 1}/{len(plan.stages())}{progress}")
    console.print(
        f"  edges serve stable={edges.get('stable')} canary={edges.get('canary')} "
        f"at {edges.get('canary_percent', 0)}%" + (" (shadow)" if edges.get("shadow") else "")
    )
    rails = plan.guardrails
    console.print(
        f"  guardrails: p99 ≤ {rails.max_p99_ms} ms, errors ≤ {rails.max_error_rate}, "
        f"CTR ratio ≥ {rails.min_ctr_ratio} at {rails.confidence:.0%}, "
        f"≥ {rails.min_requests} answers per step"
    )
    table = Table("when", "action", "by", "step", "reason", "figures", box=None, pad_edge=False)
    for decision in plan.decisions[-20:]:
        figures = ", ".join(f"{k}={v}" for k, v in decision.figures.items() if v is not None)
        step = "shadow" if decision.shadow else f"{decision.percent}%"
        when = time.strftime("%H:%M:%S", time.localtime(decision.at))
        by = label(decision.operator, decision.operator_via)
        table.add_row(when, decision.action, by, step, decision.reason, figures)
    console.print(table)
    for entry in found["audit"]:
        console.print(f"  audit: {_audit_line(entry)}")


def _audit_line(entry: dict[str, Any]) -> str:
    """When, what, by whom, and why: one audit entry as the operator reads it."""
    at = entry.get("at")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
        if isinstance(at, int | float)
        else "?"
    )
    operator, via = entry.get("operator", "controller"), entry.get("operator_via", "service")
    by = label(str(operator), str(via))
    return (
        f"{when} {entry.get('action')} of bundle {entry.get('version')} by {by}: "
        f"{entry.get('reason', '')}"
    )


def _steering(
    name: str, action: Callable[[JetStreamContext, str, Actor], Awaitable[RolloutPlan]]
) -> None:
    @rollout.command(name, help=f"{name.capitalize()} the rollout in the given regions.")
    @click.option("--region", "regions", help="Regions (comma-separated); default: every "
                  "region with a rollout that can be steered so.")  # fmt: skip
    @nats_option("")
    @actor_options
    def command(regions: str | None, nats_url: str) -> None:
        async def steer(js: JetStreamContext, actor: Actor) -> list[RolloutPlan]:
            targets = _regions(regions)
            if not targets:
                targets = tuple(
                    sorted(r for r, (p, _) in (await read_plans(js)).items() if p.active)
                )
                if not targets:
                    raise CommandError("no rollout is in progress")
            return [await action(js, region, actor) for region in targets]

        for plan in _run(nats_url, steer):
            click.echo(f"{plan.region}: bundle {plan.version} {plan.status}")


for _name, _action in (("pause", pause), ("resume", resume), ("abort", abort)):
    _steering(_name, _action)


@click.command("rollback")
@click.option("--region", required=True, help="The region to roll back.")
@nats_option("")
@actor_options
def rollback_command(region: str, nats_url: str) -> None:
    """Withdraw a region's canary, or restore the stable bundle its last rollout replaced."""
    (target,) = _regions(region) or (None,)
    if target is None:
        raise click.BadParameter("--region names no region")
    plan = _run(nats_url, lambda js, actor: rollback(js, target, actor))
    click.echo(f"{plan.region}: {plan.reason}; edges serve bundle {plan.edge_record(None).stable}")
