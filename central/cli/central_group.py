"""``proxima central``: the services that run centrally (bridge, continuous trainer)."""

from __future__ import annotations

import click

from central.cli.bridge import bridge
from central.cli.controller import controller
from central.cli.run import run
from central.cli.train_follow import train_follow


@click.group()
def central() -> None:
    """Run the central services: the NATS→Kafka bridge, the continuous trainer, the rollout
    controller and the latency monitor."""


central.add_command(bridge)
central.add_command(train_follow)
central.add_command(run)
central.add_command(controller)
