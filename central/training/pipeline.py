"""From the lake to a signed bundle, out of core: the trainer's pipeline with its log-sized
steps as engine queries.

1. The lake's item events are coded on the engine (:mod:`central.training.events`);
   the sessions that ended last (``validation_fraction``) are held out, the others are
   dealt into folds and sampled by a hash of their code, so every engine picks the same.
2. The example budget grows with the data (``base_positions`` at a million replayable
   positions, with the square root beyond), within the share of ``memory_limit`` the
   examples may take. When the sampled sessions are at most one fold's worth, their
   examples are replayed against tables of every other fitting session (one table
   build); otherwise each fold against the tables of the other folds, as in memory.
3. Tables are built by :mod:`central.training.tables`; only the sampled sessions come
   into Python, and are replayed on every core (:mod:`central.training.replay`).
4. The engine is closed, and :func:`central.trainer.pipeline.finish_bundle` fits,
   exports, validates and signs as the in-memory pipeline does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from central.errors import TrainingError
from central.trainer.pipeline import (
    Prepared,
    Progress,
    TrainerConfig,
    TrainResult,
    finish_bundle,
)
from central.training.engine import Engine, EngineSettings, open_engine, scalar
from central.training.events import prepare_events
from central.training.replay import ReplaySettings, replay_groups, sessions_log
from central.training.source import select_files
from central.training.tables import build_tables
from protocol import features
from protocol.tables import CandidateTables

_PRIME: Final = 4294967291
_FOLD_HASH: Final = 2654435761
_PICK_HASH: Final = 2246822519
_BYTES_PER_ROW: Final = features.N_FEATURES * 4 * 3  # float32 rows, and the fit's float64 copy


@dataclass(frozen=True, slots=True)
class LakeTrainConfig:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    engine: EngineSettings = field(default_factory=EngineSettings)
    days: int | None = None  # the last N days of the lake; None: all of it
    max_positions: int = 45_000  # the budget never exceeds this: the fit grows with it
    example_memory_share: float = 0.5  # of the memory limit, for examples and the fit
    chunk_rows: int = 2_000  # events replayed a task


@dataclass(frozen=True, slots=True)
class Plan:
    sessions: int
    events: int
    fitting_positions: int
    held_positions: int
    share: float  # of fitting sessions replayed into examples
    validation_share: float
    single_holdout: bool


def example_budget(fitting_positions: int, config: LakeTrainConfig) -> int:
    """Positions replayed into examples: ``max_positions`` of the trainer at a million
    positions or fewer, growing with the square root beyond, within the memory share."""
    base = config.trainer.max_positions
    grown = base * math.sqrt(max(1.0, fitting_positions / 1_000_000))
    rows_per_position = config.trainer.negatives + 1
    memory = config.engine.memory_limit_mib * 1024 * 1024 * config.example_memory_share
    by_memory = memory / (rows_per_position * _BYTES_PER_ROW)
    return int(max(1, min(grown, config.max_positions, by_memory)))


def train_from_lake(
    root: Path | str,
    config: LakeTrainConfig,
    *,
    version: int,
    private_key_pem: bytes,
    rules_version: str | None = None,
    progress: Progress | None = None,
    spark: Any = None,
) -> TrainResult:
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    selection = select_files(root, days=config.days)
    engine = open_engine(config.engine, spark=spark)
    try:
        engine.register_lake(selection.files)
        prepared = _prepare(engine, config, report)
    finally:
        engine.close()
    return finish_bundle(
        prepared,
        config.trainer,
        version=version,
        private_key_pem=private_key_pem,
        rules_version=rules_version,
        progress=report,
        started=started,
    )


def plan_sessions(engine: Engine, config: LakeTrainConfig) -> Plan:
    """Creates ``plan`` (per session: ``held``, ``fold``, ``u`` in [0, 1)) on ``ev``/``sess``."""
    trainer = config.trainer
    events = prepare_events(engine)
    sessions = int(scalar(engine, "SELECT count(*) FROM sess") or 0)
    if sessions < 2 * trainer.folds:
        raise TrainingError(
            f"need at least {2 * trainer.folds} sessions to train, the lake has {sessions}"
        )
    n_held = round(sessions * trainer.validation_fraction)
    seed = int(trainer.seed) % 1_000_003
    engine.create(
        "plan",
        f"SELECT s, n, CASE WHEN back <= {n_held} THEN 1 ELSE 0 END AS held, "
        f"((s + {seed}) * {_FOLD_HASH}) % {_PRIME} % {trainer.folds} AS fold, "
        f"CAST(((s + {seed}) * {_PICK_HASH}) % {_PRIME} AS DOUBLE) / {_PRIME}.0 AS u "
        "FROM (SELECT s, n, row_number() OVER (ORDER BY last_ts DESC, s DESC) AS back "
        "FROM sess) ranked",
    )
    counts = engine.arrow("SELECT held, sum(n - 1) AS positions FROM plan GROUP BY held")
    positions = dict(
        zip(counts.column("held").to_pylist(), counts.column("positions").to_pylist(), strict=True)
    )
    fitting, held = int(positions.get(0) or 0), int(positions.get(1) or 0)
    share = min(1.0, example_budget(fitting, config) / max(1, fitting))
    validation_share = min(1.0, trainer.max_validation_positions / max(1, held))
    return Plan(
        sessions=sessions,
        events=events,
        fitting_positions=fitting,
        held_positions=held,
        share=share,
        validation_share=validation_share,
        single_holdout=share * trainer.folds <= 1.0,
    )


def _prepare(engine: Engine, config: LakeTrainConfig, report: Progress) -> Prepared:
    trainer = config.trainer
    plan = plan_sessions(engine, config)
    picked = f"plan.held = 0 AND plan.u < {plan.share!r}"
    if plan.single_holdout:
        scopes = {"holdout": (f"plan.held = 0 AND plan.u >= {plan.share!r}", picked)}
    else:
        scopes = {
            f"fold{f}": (f"plan.held = 0 AND plan.fold <> {f}", f"{picked} AND plan.fold = {f}")
            for f in range(trainer.folds)
        }
    builds = len(scopes) + (1 if plan.single_holdout else 2)
    built = 0

    def tables_of(scope: str | None) -> CandidateTables:
        nonlocal built
        report("tables", built, builds)
        tables = build_tables(engine, trainer.tables, scope)
        built += 1
        report("tables", built, builds)
        return tables

    groups: dict[str, tuple[CandidateTables, pa.Table]] = {}
    for name, (table_scope, example_scope) in scopes.items():
        groups[name] = (tables_of(table_scope), _sessions(engine, example_scope))
    validation_tables = groups["holdout"][0] if plan.single_holdout else tables_of("plan.held = 0")
    bundle_tables = tables_of(None)
    validation = _sessions(engine, f"plan.held = 1 AND plan.u < {plan.validation_share!r}")
    bounds = engine.arrow("SELECT min(ts) AS first, max(ts) AS last FROM ev")
    engine.close()

    settings = ReplaySettings(
        window=trainer.window,
        candidates=trainer.candidates,
        negatives=trainer.negatives,
        seed=trainer.seed,
        chunk_rows=config.chunk_rows,
        workers=config.engine.cores,
    )
    report("examples", 0, 1)
    sets = replay_groups(groups, settings, lambda done, total: report("examples", done, total))
    del groups
    validation_log = sessions_log(validation)
    return Prepared(
        sets=[sets[name] for name in scopes],
        validation_log=validation_log,
        validation_runs=np.arange(validation_log.session_bounds().shape[0] - 1, dtype=np.int64),
        validation_tables=validation_tables,
        bundle_tables=_given(bundle_tables),
        log_facts={
            "events": plan.events,
            "sessions": plan.sessions,
            "first_ts": int(bounds.column("first")[0].as_py()),
            "last_ts": int(bounds.column("last")[0].as_py()),
            "engine": config.engine.engine,
            "example_share": round(plan.share, 6),
            "cross_fit": "holdout" if plan.single_holdout else f"{trainer.folds} folds",
        },
    )


def _sessions(engine: Engine, scope: str) -> pa.Table:
    """The events of the sessions ``scope`` admits, in log order, for replay."""
    return engine.arrow(
        "SELECT ev.s, sess.session_id, items.item_id, ev.ts, ev.type, cats.category, ev.price "
        "FROM ev JOIN plan ON ev.s = plan.s JOIN sess ON ev.s = sess.s "
        "JOIN items ON ev.i = items.i LEFT JOIN cats ON ev.c = cats.c "
        f"WHERE {scope} ORDER BY ev.s, ev.k"
    )


def _given(tables: CandidateTables) -> Callable[[], CandidateTables]:
    return lambda: tables
