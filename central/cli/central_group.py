"""``proxima central``: the services that run centrally."""

from __future__ import annotations

import click

from central.cli.lazy import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy={
        "bridge": "central.cli.bridge:bridge",
        "train": "central.cli.train_follow:train_follow",
        "run": "central.cli.run:run",
        "controller": "central.cli.controller:controller",
    },
)
def central() -> None:
    """Run the central services: the NATS→Kafka bridge, the continuous trainer, the rollout
    controller and the latency monitor."""
