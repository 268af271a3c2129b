"""``proxima latency``: the edges' latency per region, from the monitor or from telemetry."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import click
import nats
from nats.aio.client import Client as NatsClient
from rich.console import Console, Group, RenderableType
from rich.live import Live

from central.cli.errors import CommandError, reported_errors
from central.cli.options import nats_connection, nats_option
from central.monitor.client import TelemetryListener, ask_monitor
from central.monitor.errors import MonitorQueryError
from central.monitor.query import LatencyQuery, parse_duration
from central.monitor.view import render_summary
from protocol.errors import ProtocolError
from protocol.subjects import MONITOR_REQUEST_SUBJECT
from runtime.nats import NatsSettings
from runtime.supervisor import redact

ASK_TIMEOUT_S: Final = 2.0
_WIDTH: Final = 120  # rich assumes 80 columns when not on a terminal; the tables need more

JSON_SHAPE = """\b
--json prints one object:
  {"source": "monitor" | "telemetry",   who computed it (see above)
   "window_s", "since", "until",        the window, unix seconds
   "listened_s": float | null,          how long telemetry was heard directly
   "malformed": int,                    bad reports heard (source "telemetry" only)
   "regions": [{
     "region", "nodes_total", "nodes_reporting",
     "silent", "stale", "not_ready", "restarted": [node, ...],
     "refused": [{"node", "version", "code", "message"}],
     "bundles": {"stable": [v], "canary": [v], "canary_percent": [p], "shadow": bool},
     "reports", "span_s", "requests", "request_rate", "errors",
     "error_rate" (null without requests), "overloaded",
     "events": {"accepted", "duplicate", "rejected"},
     "latency_ms": {stage: {"count", "p50", "p95", "p99", "mean"}},
     "variants": {"stable" | "canary": {"version", "requests", "errors",
                  "impressions", "clicks", "ctr", "latency_ms": {...}}},
     "nodes": [{"node", "last_seen", "silent", "stale", "ready", "restarted",
                "stable", "canary", "canary_percent", "shadow", "spool_events",
                ...the same window figures as the region}]   (with --nodes)
   }]}
Stages: request (HTTP time of GET /v1/recommendations), total, window, candidates,
features, inference, rules. Latencies are in milliseconds."""


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except MonitorQueryError as exc:
        raise click.BadParameter(exc.message) from exc
    if seconds <= 0:
        raise click.BadParameter(f"must be more than zero, got {value!r}")
    return seconds


@click.command("latency", epilog=JSON_SHAPE)
@nats_option(": where the latency monitor answers and the edges report")
@click.option("--region", help="Only this region.")
@click.option("--nodes", "per_node", is_flag=True, help="Add the figures of every node.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (shape below).")
@click.option(
    "--window",
    default="60s",
    show_default=True,
    callback=_duration,
    help="How far back the figures go: 60s, 5m, 1h.",
)
@click.option(
    "--listen",
    default="10s",
    show_default=True,
    callback=_duration,
    help="When no monitor answers: how long to listen to the edges' telemetry yourself "
    "(about two report intervals).",
)
@click.option(
    "--refresh", default="2s", show_default=True, callback=_duration, help="With --watch."
)
@click.option(
    "--count",
    type=click.IntRange(0),
    default=0,
    help="With --watch: stop after this many refreshes (0: until Ctrl-C).",
)
def latency(
    nats_url: str,
    region: str | None,
    per_node: bool,
    watch: bool,
    as_json: bool,
    window: float,
    listen: float,
    refresh: float,
    count: int,
) -> None:
    """Edge latency per region: p50/p95/p99 of every stage, request and error rates, bundle
    versions, silent and stale nodes.

    Asks the latency monitor running in 'proxima central run'. When none answers, listens to
    the edges' telemetry for --listen and computes the same figures from what it heard (the
    output says so: source "telemetry"), which then cover only that time.
    """
    if watch and as_json:
        raise click.UsageError("--watch and --json do not go together")
    try:
        settings = nats_connection(nats_url, name="proxima-latency")
    except ProtocolError as exc:
        raise click.BadParameter(exc.message, param_hint="--nats") from exc
    try:
        query = LatencyQuery(region=region, window_s=window, nodes=per_node)
    except MonitorQueryError as exc:
        hint = "--region" if exc.field == "region" else "--window"
        raise click.BadParameter(exc.message, param_hint=hint) from exc
    show = _Shower(as_json=as_json, watch=watch)
    with reported_errors():
        try:
            asyncio.run(
                _run(settings, query, show, listen_s=listen, refresh_s=refresh, count=count)
            )
        except KeyboardInterrupt:
            pass
        finally:
            show.close()


async def _run(
    settings: NatsSettings,
    query: LatencyQuery,
    show: _Shower,
    *,
    listen_s: float,
    refresh_s: float,
    count: int,
) -> None:
    client = await _connect(settings)
    listener: TelemetryListener | None = None
    try:
        shown = 0
        while True:
            summary = await ask_monitor(client, query, timeout_s=ASK_TIMEOUT_S)
            if summary is None:
                if listener is None:
                    listener = TelemetryListener(client, region=query.region)
                    await listener.start()
                    show.note(
                        f"no monitor answered on {MONITOR_REQUEST_SUBJECT}: listening to "
                        f"telemetry for {listen_s:g} s"
                    )
                    await asyncio.sleep(listen_s)
                summary = listener.summary(query)
            else:
                summary.setdefault("listened_s", None)
            show.summary(summary)
            shown += 1
            if not show.watch or (count and shown >= count):
                return
            await asyncio.sleep(refresh_s)
    finally:
        if listener is not None:
            await listener.stop()
        await client.close()


async def _connect(settings: NatsSettings) -> NatsClient:
    async def quiet(exc: Exception) -> None:
        pass  # the failure is reported below, once, instead of nats-py's traceback per attempt

    options: dict[str, Any] = settings.connect_options()
    options.update(allow_reconnect=False, max_reconnect_attempts=1, error_cb=quiet)
    try:
        return await nats.connect(**options)
    except Exception as exc:
        servers = redact(",".join(settings.servers))
        raise CommandError(f"cannot connect to NATS at {servers}: {exc!r}") from exc


class _Shower:
    """Prints summaries: JSON once, a table once, or a live table that refreshes."""

    def __init__(self, *, as_json: bool, watch: bool) -> None:
        self.as_json = as_json
        self.watch = watch
        self.console = Console(width=None if Console().is_terminal else _WIDTH)
        self._errors = Console(stderr=True)
        self._live: Live | None = None
        self._notes: list[str] = []

    def note(self, text: str) -> None:
        if self.as_json:
            self._errors.print(text, style="yellow", highlight=False)
        elif not self.watch:
            self.console.print(text, style="yellow", highlight=False)
        else:
            self._notes.append(text)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        view: RenderableType = render_summary(summary)
        if not self.watch:
            self.console.print(view)
            return
        if self._notes:
            view = Group(*self._notes, view)
        if self._live is None:
            self._live = Live(view, console=self.console, auto_refresh=False)
            self._live.start()
        self._live.update(view, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
