"""``proxima evaluate --logged LAKE --bundle B``: a candidate judged on logged answers.

No user sees the candidate: the edges' logged answers (with their propensities) and the
clicks or purchases that followed are read from the lake, every session is replayed to
the moment of each answer through the candidate's serving code, and clipped IPS,
self-normalised IPS and doubly robust estimates of its reward per answer are printed with
intervals — against ``--baseline-bundle`` (the stable one) when given, paired answer by
answer, with the gate's verdict (``--gate-estimator``, ``--gate-margin``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from central.lake.layout import open_lake
from central.outcomes.logged import Reward
from central.outcomes.offpolicy import GateSettings, OffPolicyResult, evaluate_lake
from central.outcomes.ope import Estimator
from central.outcomes.stats import Interval
from protocol.bundle import read_bundle
from protocol.keys import load_public_key
from protocol.serving import ServingModel


def load_model(path: Path, public_key: Path) -> ServingModel:
    return ServingModel.from_bundle(
        read_bundle(path.read_bytes(), load_public_key(public_key.read_bytes()))
    )


def run_logged(
    lake_root: Path,
    bundle_path: Path,
    baseline_path: Path | None,
    public_key: Path,
    *,
    reward: Reward,
    estimator: Estimator,
    margin: float,
    clip: float,
    days: int | None,
    as_json: bool,
) -> OffPolicyResult:
    """Runs the off-policy evaluation and prints it; errors are :class:`ProximaError`."""
    layout = open_lake(lake_root)
    dates = layout.days()
    if days is not None:
        dates = dates[-days:]
    candidate = load_model(bundle_path, public_key)
    baseline = load_model(baseline_path, public_key) if baseline_path is not None else None
    gate = GateSettings(estimator=estimator, margin=margin, clip=clip)
    result = evaluate_lake(layout.data_files(dates), candidate, baseline, gate, reward=reward)
    if as_json:
        body = result.to_dict()
        body["candidate_version"] = candidate.version
        body["baseline_version"] = baseline.version if baseline is not None else None
        click.echo(json.dumps(body, sort_keys=True))
    else:
        _print(result, candidate.version, baseline.version if baseline is not None else None)
    return result


def _cell(interval: Interval | None) -> str:
    if interval is None or not math.isfinite(interval.estimate):
        return "-"
    return f"{interval.estimate:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def _print(result: OffPolicyResult, candidate: int, baseline: int | None) -> None:
    console = Console(width=120)
    table = Table(
        title=f"off-policy estimates over {result.answers} logged answers "
        f"(logged reward per answer {result.logged_value:.4f})",
        title_justify="left",
    )
    table.add_column("estimator")
    table.add_column(f"candidate {candidate}", justify="right")
    if baseline is not None:
        table.add_column(f"baseline {baseline}", justify="right")
        table.add_column("difference", justify="right")
    for name, interval in result.candidate.items():
        row = [name, _cell(interval)]
        if baseline is not None:
            row += [_cell(result.baseline.get(name)), _cell(result.difference.get(name))]
        table.add_row(*row)
    console.print(table)
    if result.passed is not None:
        verdict = "passes" if result.passed else "fails"
        console.print(
            f"gate ({result.gate.estimator}, margin {result.gate.margin:g}): candidate {verdict}"
        )
