"""The ``proxima`` command line.

Environment variables are read here, at the entry point, and nowhere else. Subcommands are
imported when they run (see :mod:`central.cli.lazy`).
"""

from __future__ import annotations

import click

from central.cli.lazy import LazyGroup

COMMANDS = {
    "demo": "devtools.demo.command:demo",
    "keys": "central.cli.keys:keys",
    "train": "central.cli.train:train",
    "bundle": "central.cli.bundle:bundle",
    "evaluate": "central.cli.evaluate:evaluate",
    "generate": "devtools.generate_command:generate",
    "edge": "edge_node.cli:edge",
    "central": "central.cli.central_group:central",
    "latency": "central.cli.latency:latency",
    "rollout": "central.cli.rollout:rollout",
    "rollback": "central.cli.rollout:rollback_command",
    "lake": "central.cli.lake:lake",
    "catalog": "central.cli.catalog:catalog",
    "rules": "central.cli.rules:rules",
    "report": "central.cli.report:report",
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="proxima")
def main() -> None:
    """Proxima: edge-deployed personalization, trained centrally, answered locally."""
