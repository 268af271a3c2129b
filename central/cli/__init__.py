"""The ``proxima`` command line.

Environment variables are read here, at the entry point, and nowhere else.
"""

from __future__ import annotations

import click

from central.cli.bundle import bundle
from central.cli.central_group import central
from central.cli.demo import demo
from central.cli.edge import edge
from central.cli.evaluate import evaluate
from central.cli.generate import generate
from central.cli.keys import keys
from central.cli.latency import latency
from central.cli.rollout import rollback_command, rollout
from central.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="proxima")
def main() -> None:
    """Proxima: edge-deployed personalization, trained centrally, answered locally."""


for command in (
    demo,
    keys,
    train,
    bundle,
    evaluate,
    generate,
    edge,
    central,
    latency,
    rollout,
    rollback_command,
):
    main.add_command(command)
