"""``proxima report``: conversion, revenue and CTR lift per model version, from the lake."""

from __future__ import annotations

import json
import math

import click
from rich.console import Console
from rich.table import Table

from central.cli.errors import reported_errors
from central.lake.layout import open_lake
from central.outcomes.attribution import AttributionSettings, attribute
from central.outcomes.errors import OutcomesError
from central.outcomes.report import METRICS, ArmReport, Report, build_report
from central.outcomes.stats import Interval

_WIDTH = 140
_COLUMNS = (
    "region", "bundle", "variant", "sessions", "CTR", "conversion", "revenue/session",
    "attributed", "lift vs holdout", "lift vs stable",
)  # fmt: skip


@click.command("report")
@click.option("--lake", "lake_root", required=True, help="The event lake's root directory.")
@click.option("--version", "version", type=click.IntRange(0), help="Only this bundle version.")
@click.option("--region", help="Only this region.")
@click.option("--days", type=click.IntRange(1, 3650), help="Only the last N days of the lake.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--sequential",
    is_flag=True,
    help="Always-valid intervals (safe to read again and again as data arrive).",
)
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True)
@click.option("--currency", default="EUR", show_default=True, help="The shop's currency.")
@click.option(
    "--purchase-window",
    "purchase_window_s",
    type=click.IntRange(60, 30 * 86400),
    default=3600,
    show_default=True,
    help="Seconds after a click (or a showing) within which a purchase is attributed to it.",
)
def report(
    lake_root: str,
    version: int | None,
    region: str | None,
    days: int | None,
    as_json: bool,
    sequential: bool,
    confidence: float,
    currency: str,
    purchase_window_s: int,
) -> None:
    """CTR, conversion rate and revenue per session of every model version, variant and
    region, with intervals, and their lift over the holdout and over the stable version.

    Reads the edges' served-answer records and the page's clicks and purchases from the
    lake; anomalies (clicks for unknown answers, purchases without value, clock skew ...)
    are counted and shown, never attributed.
    """
    try:
        settings = AttributionSettings(purchase_window_s=purchase_window_s, currency=currency)
    except OutcomesError as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.field}") from exc
    with reported_errors():
        layout = open_lake(lake_root)
        dates = layout.days()
        if days is not None:
            dates = dates[-days:]
        result = build_report(
            attribute(layout.data_files(dates), settings),
            version=version,
            region=region,
            confidence=confidence,
            sequential=sequential,
        )
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
    else:
        _print(result)


def _print(result: Report) -> None:
    console = Console(width=_WIDTH)
    kind = "always-valid" if result.sequential else "fixed"
    table = Table(
        title=f"outcomes ({result.confidence:.0%} {kind} intervals)", title_justify="left"
    )
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column in ("region", "variant") else "right")
    for arm in result.arms:
        table.add_row(
            arm.region or "-",
            str(arm.bundle),
            arm.variant,
            str(arm.sessions),
            _rate(arm.figures["ctr"]),
            _rate(arm.figures["conversion"]),
            _amount(arm.figures["revenue"]),
            f"{arm.attributed_revenue:.2f}",
            _lifts(arm, holdout=True),
            _lifts(arm, holdout=False),
        )
    console.print(table)
    flagged = {name: count for name, count in result.anomalies.items() if count}
    console.print(f"{result.answers} answers, {result.events} events")
    if flagged:
        console.print(
            "not attributed: " + ", ".join(f"{name} {count}" for name, count in flagged.items())
        )
    if not result.arms:
        console.print("no served answers in the lake (are edges writing served records?)")


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _rate(interval: Interval) -> str:
    return (
        f"{_number(interval.estimate * 100, 2)}% "
        f"[{_number(interval.low * 100, 2)}, {_number(interval.high * 100, 2)}]"
    )


def _amount(interval: Interval) -> str:
    return (
        f"{_number(interval.estimate, 2)} [{_number(interval.low, 2)}, {_number(interval.high, 2)}]"
    )


def _lifts(arm: ArmReport, *, holdout: bool) -> str:
    lifts = arm.lift_vs_holdout if holdout else arm.lift_vs_stable
    if not lifts:
        return "-"
    parts = []
    for metric in METRICS:
        interval = lifts.get(metric)
        if interval is not None:
            parts.append(f"{metric} {_number(interval.estimate * 100, 1)}%")
    return " ".join(parts)
