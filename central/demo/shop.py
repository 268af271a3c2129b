"""The demo's data: a synthetic shop log split in time, and a signed bundle trained on the
first part. The held-back sessions are what the edges later see as live traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from central.datasets import read_log
from central.eventlog import EventLog
from central.loggen import GenerateStats, GeneratorConfig, generate_file
from central.trainer.pipeline import Progress, TrainerConfig, train_bundle
from model_export.pack import write_bundle_file
from protocol.bundle import inspect_bundle
from protocol.keys import write_keypair

HELD_BACK_SHARE = 0.15  # the most recently started sessions, replayed and never trained on
DEMO_DAYS = 14.0
# Enough examples for a sound ranker in seconds; the trainer's default is five times this.
DEMO_MAX_POSITIONS = 6_000


@dataclass(frozen=True, slots=True)
class ShopLog:
    path: Path
    stats: GenerateStats
    train: EventLog
    replay: EventLog
    train_sessions: int
    replay_sessions: int


@dataclass(frozen=True, slots=True)
class DemoBundle:
    path: Path
    public_key: Path
    version: int
    size: int
    precision: str
    validation: dict[str, dict[str, Any]]  # precision -> hr_at_20, mrr_at_20, predictions
    training: dict[str, Any]


def shop_config(sessions: int, seed: int) -> GeneratorConfig:
    # A catalog in proportion to the traffic: a 2,000-session log over the generator's
    # default 20,000 items would leave most items unseen and the tables thin.
    items = min(20_000, max(200, sessions))
    categories = min(50, max(8, items // 100))
    return GeneratorConfig(
        sessions=sessions, items=items, categories=categories, seed=seed, days=DEMO_DAYS
    )


def generate_shop(path: Path, sessions: int, seed: int) -> ShopLog:
    stats = generate_file(path, shop_config(sessions, seed))
    log, _ = read_log(path, "csv")
    train, replay = split_by_start(log, HELD_BACK_SHARE)
    return ShopLog(
        path=path,
        stats=stats,
        train=train,
        replay=replay,
        train_sessions=session_count(train),
        replay_sessions=session_count(replay),
    )


def split_by_start(log: EventLog, held_back_share: float) -> tuple[EventLog, EventLog]:
    """Sessions that started before the cut, and those that started at or after it."""
    bounds = log.session_bounds()
    starts = log.ts[bounds[:-1]]
    runs = starts.shape[0]
    held_back = max(1, round(runs * held_back_share))
    cut = np.sort(starts)[runs - held_back]
    late = np.repeat(starts >= cut, np.diff(bounds))
    return log.select(~late), log.select(late)


def session_count(log: EventLog) -> int:
    return int(log.session_bounds().shape[0] - 1)


def train_demo_bundle(
    log: EventLog,
    workdir: Path,
    *,
    rules_version: str | None,
    seed: int,
    progress: Progress | None = None,
) -> DemoBundle:
    private_key, public_key = write_keypair(workdir / "keys")
    version = int(time.time())
    result = train_bundle(
        log,
        TrainerConfig(max_positions=DEMO_MAX_POSITIONS, seed=seed),
        version=version,
        private_key_pem=private_key.read_bytes(),
        rules_version=rules_version,
        progress=progress,
    )
    path = workdir / "bundles" / f"bundle-{version}.bundle"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bundle_file(path, result.bundle)
    manifest = inspect_bundle(result.bundle)
    return DemoBundle(
        path=path,
        public_key=public_key,
        version=version,
        size=len(result.bundle),
        precision=str(manifest.ranker.get("precision", "?")),
        validation=dict(result.manifest_metrics["validation"]),
        training=dict(result.training),
    )
