"""The demo's data: a synthetic shop log ending now, split in time, and the signing keys.

The older sessions are the shop's history, sent through the edges for the trainer to learn
from; the most recently started ones are held back and replayed afterwards as live traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from central.datasets import read_log
from central.eventlog import EventLog
from central.keys import write_keypair
from devtools.loggen import DAY_MS, GenerateStats, GeneratorConfig, generate_file

HELD_BACK_SHARE = 0.15  # the most recently started sessions, replayed and never trained on
DEMO_DAYS = 14.0


@dataclass(frozen=True, slots=True)
class ShopLog:
    path: Path
    stats: GenerateStats
    history: EventLog
    replay: EventLog
    history_sessions: int
    replay_sessions: int


@dataclass(frozen=True, slots=True)
class SigningKeys:
    private: Path  # for the trainer
    public: Path  # for the edges


def shop_config(sessions: int, seed: int, now_ms: int) -> GeneratorConfig:
    # A catalog in proportion to the traffic: a small log over the generator's default
    # 20,000 items would leave most items unseen and the tables thin.
    items = min(20_000, max(200, sessions))
    categories = min(50, max(8, items // 100))
    return GeneratorConfig(
        sessions=sessions,
        items=items,
        categories=categories,
        seed=seed,
        days=DEMO_DAYS,
        start_ms=now_ms - int(DEMO_DAYS * DAY_MS),  # the log ends about now
    )


def generate_shop(path: Path, sessions: int, seed: int) -> ShopLog:
    stats = generate_file(path, shop_config(sessions, seed, int(time.time() * 1000)))
    log, _ = read_log(path, "csv")
    history, replay = split_by_start(log, HELD_BACK_SHARE)
    return ShopLog(
        path=path,
        stats=stats,
        history=history,
        replay=replay,
        history_sessions=session_count(history),
        replay_sessions=session_count(replay),
    )


def make_keys(directory: Path) -> SigningKeys:
    private, public = write_keypair(directory)
    return SigningKeys(private, public)


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
