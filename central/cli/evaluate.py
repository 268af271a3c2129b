"""``proxima evaluate``: next-item replay of baselines and a Proxima bundle (EVALUATION.md)."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from central.cli.engine_options import engine_options, engine_settings
from central.cli.errors import reported_errors
from central.cli.evaluate_logged import run_logged
from central.cli.options import optional_data_options, public_key_option
from central.cli.progress import progress_bars, stage_reporter
from central.datasets import read_log
from central.evaluation.baselines import Covisitation, ItemKNN, Popularity, SessionKNN
from central.evaluation.proxima import ProximaRecommender
from central.evaluation.replay import ReplayResult, SessionRecommender
from central.evaluation.replay import evaluate as replay
from central.evaluation.split import Split, prepare
from central.outcomes.logged import Reward
from central.outcomes.ope import Estimator
from central.trainer.pipeline import TrainerConfig, train_bundle
from central.training.engine import EngineSettings
from central.training.lakefile import log_to_lake
from central.training.pipeline import LakeTrainConfig, train_from_lake
from protocol.bundle import Bundle, read_bundle
from protocol.keys import generate_keypair, load_public_key
from protocol.serving import ServingModel

K = 20


@dataclass(frozen=True, slots=True)
class Report:
    dataset: str
    split: Split
    results: list[ReplayResult]

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "train_events": self.split.train_events,
            "test_sessions": self.split.test_sessions,
            "predictions": self.split.predictions,
            "results": [
                {
                    "name": r.name,
                    "hr_at_20": round(r.hr_at_k, 6),
                    "mrr_at_20": round(r.mrr_at_k, 6),
                    "ms_per_prediction": round(r.ms_per_prediction, 4),
                }
                for r in self.results
            ],
        }


@click.command()
@optional_data_options
@click.option(
    "--test-days",
    type=click.FloatRange(0, min_open=True),
    default=7.0,
    show_default=True,
    help="Sessions ending in the log's last N days are the test set.",
)
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Score this bundle instead of training one on the training part of the split. "
    "It must not have been trained on the test period.",
)
@public_key_option(required=False)
@click.option(
    "--logged",
    "logged_lake",
    type=click.Path(file_okay=False, path_type=Path),
    help="Instead of a replay: estimate off-policy how --bundle would have done on the "
    "answers logged in this event lake (clipped IPS, SNIPS, doubly robust).",
)
@click.option(
    "--baseline-bundle",
    "baseline_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --logged: compare against this bundle (the stable one) and apply the gate.",
)
@click.option(
    "--reward",
    type=click.Choice(["click", "purchase"]),
    default="click",
    show_default=True,
    help="With --logged: what a shown item earns.",
)
@click.option(
    "--gate-estimator",
    type=click.Choice(["ips", "snips", "dr"]),
    default="dr",
    show_default=True,
    help="With --logged and --baseline-bundle: the estimator the gate judges by.",
)
@click.option(
    "--gate-margin",
    type=click.FloatRange(0, 1e6),
    default=0.0,
    show_default=True,
    help="With --logged: reward per answer the candidate may lose and still pass.",
)
@click.option(
    "--clip",
    type=click.FloatRange(1, 1e6),
    default=20.0,
    show_default=True,
    help="With --logged: the largest importance weight (1 / propensity) used.",
)
@click.option(
    "--logged-days", type=click.IntRange(1, 3650), help="With --logged: only the last N days."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--seed", type=int, default=0, show_default=True)
@engine_options
def evaluate(
    data: Path | None,
    fmt: str | None,
    skip_bad_rows: bool,
    test_days: float,
    bundle_path: Path | None,
    public_key: Path | None,
    logged_lake: Path | None,
    baseline_path: Path | None,
    reward: Reward,
    gate_estimator: Estimator,
    gate_margin: float,
    clip: float,
    logged_days: int | None,
    as_json: bool,
    seed: int,
    **engine: Any,
) -> None:
    """Replay test sessions and report HR@20 / MRR@20 for baselines and Proxima; or, with
    --logged, estimate a bundle off-policy on the answers edges logged."""
    if logged_lake is not None:
        if bundle_path is None or public_key is None:
            raise click.UsageError("--logged needs --bundle and --public-key")
        with reported_errors():
            result = run_logged(
                logged_lake, bundle_path, baseline_path, public_key, reward=reward,
                estimator=gate_estimator, margin=gate_margin, clip=clip, days=logged_days,
                as_json=as_json,
            )  # fmt: skip
        if result.passed is False:
            raise SystemExit(1)
        return
    if data is None or fmt is None:
        raise click.UsageError("--data and --format are required (or --logged LAKE)")
    with reported_errors():
        log, _ = read_log(data, fmt, skip_bad_rows=skip_bad_rows)  # type: ignore[arg-type]
        split = prepare(log, test_days=test_days)
        with progress_bars(enabled=not as_json) as bars:
            if bundle_path is None:
                bundle = _train_on_split(
                    split, seed, engine_settings(**engine), stage_reporter(bars)
                )
            else:
                if public_key is None:
                    raise click.UsageError("--bundle needs --public-key (or PROXIMA_PUBLIC_KEY)")
                key = load_public_key(public_key.read_bytes())
                bundle = read_bundle(bundle_path.read_bytes(), key)
            recommenders = _recommenders(bundle)
            results = []
            for recommender in recommenders:
                recommender.fit(split.train)
                task = bars.add_task(f"replay {recommender.name}", total=split.predictions)
                results.append(
                    replay(
                        recommender,
                        split.test,
                        k=K,
                        progress=partial(bars.advance, task),
                    )
                )
    report = Report(data.name, split, results)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        _print_table(report)


def _train_on_split(
    split: Split, seed: int, engine: EngineSettings, progress: Any
) -> Bundle:
    """A bundle trained on the split's training side, in memory or through a lake."""
    private_pem, public_pem = generate_keypair()  # a throwaway key: this bundle never leaves
    if engine.engine == "memory":
        trained = train_bundle(
            split.train,
            TrainerConfig(seed=seed),
            version=1,
            private_key_pem=private_pem,
            progress=progress,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="proxima-lake-", dir=engine.temp_dir) as root:
            log_to_lake(split.train, root)
            trained = train_from_lake(
                root,
                LakeTrainConfig(trainer=TrainerConfig(seed=seed), engine=engine),
                version=1,
                private_key_pem=private_pem,
                progress=progress,
            )
    return read_bundle(trained.bundle, load_public_key(public_pem))


def _recommenders(bundle: Bundle) -> list[SessionRecommender]:
    found: list[SessionRecommender] = [Popularity(), ItemKNN(), SessionKNN(), Covisitation()]
    found.append(ProximaRecommender("proxima-fp32", ServingModel.from_bundle(bundle, "fp32")))
    if bundle.manifest.ranker.get("int8"):
        found.append(ProximaRecommender("proxima-int8", ServingModel.from_bundle(bundle, "int8")))
    return found


def _print_table(report: Report) -> None:
    split = report.split
    table = Table(title=f"{report.dataset}: next-item replay, HR@{K} / MRR@{K}")
    for column in ("recommender", f"HR@{K}", f"MRR@{K}", "ms / prediction"):
        table.add_column(column, justify="left" if column == "recommender" else "right")
    for r in report.results:
        table.add_row(r.name, f"{r.hr_at_k:.4f}", f"{r.mrr_at_k:.4f}", f"{r.ms_per_prediction:.3f}")
    console = Console(file=sys.stdout)
    console.print(table)
    console.print(
        f"train events {split.train_events:,}  train sessions {split.train_sessions:,}  "
        f"test sessions {split.test_sessions:,}  predictions {split.predictions:,}"
    )
