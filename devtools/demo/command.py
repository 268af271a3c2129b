"""``proxima demo``: the main job, end to end on this machine."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from central.cli.errors import reported_errors
from devtools.demo import DEFAULT_SESSIONS

INTERRUPTED_EXIT_STATUS = 130  # the shell's convention for a command ended by SIGINT
_PIPE_WIDTH = 120  # rich assumes 80 columns when not on a terminal; the tables need more


@click.command()
@click.option(
    "--sessions",
    type=click.IntRange(100, 1_000_000),
    default=DEFAULT_SESSIONS,
    show_default=True,
    help="Sessions in the generated shop log: the trainer learns from the older 85%, the "
    "most recent 15% are replayed as live traffic asking for recommendations.",
)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(0),
    help="Stop this many seconds after the start (after the replay at the earliest). "
    "Default: serve until Ctrl-C.",
)
@click.option(
    "--keep", is_flag=True, help="Keep the working directory: logs, keys, trainer state, spools."
)
@click.option(
    "--workdir",
    "workdir_parent",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Make the demo's working directory inside this directory [the system temp dir].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shop log.")
def demo(
    sessions: int, duration_s: float | None, keep: bool, workdir_parent: Path | None, seed: int
) -> None:
    """Run Proxima end to end on this machine: servers, central, two edges, live traffic.

    Starts nats-server (JetStream), a Kafka-protocol broker (Tansu) and redis-server, then
    `proxima central run` (bridge and trainer) and two edges (`proxima edge serve`, regions
    eu and us). Sends a generated shop's history through the edges, follows it through
    JetStream and Kafka to the trainer, waits until both edges serve the trainer's first
    bundle, replays held-back sessions asking for recommendations, and prints a summary.

    Everything it starts is stopped when it ends, by Ctrl-C, SIGTERM, --duration or an
    error, and its working directory is removed.
    """
    from devtools.demo.errors import DemoInterrupted, StopRequested
    from devtools.demo.runner import DemoOptions, run_demo

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=_PIPE_WIDTH)
    options = DemoOptions(
        sessions=sessions,
        duration_s=duration_s,
        keep=keep,
        workdir_parent=workdir_parent,
        seed=seed,
    )
    with reported_errors():
        try:
            run_demo(options, console)
        except (DemoInterrupted, StopRequested) as exc:
            reason = exc if isinstance(exc, DemoInterrupted) else f"stopped by {exc.signal_name}"
            click.echo(f"error: {reason}", err=True)
            raise click.exceptions.Exit(INTERRUPTED_EXIT_STATUS) from exc
