"""Sampled sessions replayed into training examples on every core.

Sessions come from the engine as Arrow, in the trainer's row order, and are dealt into
chunks of whole sessions; each chunk becomes a small :class:`~central.eventlog.EventLog`
and goes through :func:`central.trainer.examples.build_examples`, the one path from the
featurize seam to examples. Workers read the candidate tables from ``.npy`` files mapped
into memory, so the tables are shared through the page cache rather than copied into
each process. A chunk's random negatives are seeded by its group and number, so the
examples are the same whatever the number of workers.
"""

from __future__ import annotations

import itertools
import multiprocessing
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from central.eventlog import EventLog, build_log
from central.trainer.examples import ExampleSet, build_examples
from protocol import features
from protocol.candidates import CandidateConfig
from protocol.events import EVENT_TYPE_CODES
from protocol.tables import CandidateTables
from protocol.window import WindowConfig

SESSION_COLUMNS: Final = ("s", "session_id", "item_id", "ts", "type", "category", "price")
_ARRAYS: Final = (
    "covis_indptr",
    "covis_indices",
    "covis_weights",
    "pop_all",
    "pop_recent",
    "category",
    "price",
    "sess_indptr",
    "sess_items",
    "item_sess_indptr",
    "item_sess",
)

_worker_tables: dict[str, CandidateTables] = {}


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    window: WindowConfig
    candidates: CandidateConfig
    negatives: int
    seed: int
    chunk_rows: int = 2_000
    workers: int = 1


@dataclass(frozen=True, slots=True)
class _Task:
    group: str
    chunk: int
    rows: dict[str, list[Any]]
    settings: ReplaySettings


def sessions_log(table: pa.Table) -> EventLog:
    """An Arrow table of :data:`SESSION_COLUMNS` (rows in log order) as an EventLog."""
    return _log_of(_columns(table))


def replay_groups(
    groups: dict[str, tuple[CandidateTables, pa.Table]],
    settings: ReplaySettings,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, ExampleSet]:
    """Examples of each group's sessions against that group's tables."""
    tasks = [task for name, (_, table) in groups.items() for task in _tasks(name, table, settings)]
    results: dict[tuple[str, int], ExampleSet] = {}
    if settings.workers <= 1 or len(tasks) <= 1:
        _worker_tables.update({name: tables for name, (tables, _) in groups.items()})
        try:
            for done, task in enumerate(tasks, 1):
                results[(task.group, task.chunk)] = _replay(task)
                if progress is not None:
                    progress(done, len(tasks))
        finally:
            _worker_tables.clear()
    else:
        with tempfile.TemporaryDirectory(prefix="proxima-tables-") as directory:
            paths = {}
            for name, (tables, _) in groups.items():
                paths[name] = str(Path(directory) / name)
                save_tables(tables, Path(paths[name]))
            with ProcessPoolExecutor(
                max_workers=settings.workers,
                mp_context=_context(),
                initializer=_load_worker_tables,
                initargs=(paths,),
            ) as pool:
                for done, (task, found) in enumerate(
                    zip(tasks, pool.map(_replay, tasks), strict=True), 1
                ):
                    results[(task.group, task.chunk)] = found
                    if progress is not None:
                        progress(done, len(tasks))
    return {
        name: _merged([found for (group, _), found in sorted(results.items()) if group == name])
        for name in groups
    }


def save_tables(tables: CandidateTables, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocabularies.msgpack").write_bytes(
        msgpack.packb([tables.item_ids, tables.categories])
    )
    for name in _ARRAYS:
        np.save(directory / f"{name}.npy", getattr(tables, name), allow_pickle=False)


def load_tables(directory: Path) -> CandidateTables:
    """Tables saved by :func:`save_tables`, their arrays mapped read-only."""
    item_ids, categories = msgpack.unpackb((directory / "vocabularies.msgpack").read_bytes())
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    return CandidateTables(item_ids=item_ids, categories=categories, **arrays)


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _load_worker_tables(paths: dict[str, str]) -> None:
    for name, path in paths.items():
        _worker_tables[name] = load_tables(Path(path))


def _tasks(name: str, table: pa.Table, settings: ReplaySettings) -> Iterator[_Task]:
    if table.num_rows == 0:
        return
    sessions = table.column("s").to_numpy()
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    # Whole sessions, about chunk_rows events a chunk.
    cut = np.r_[True, np.diff(starts // settings.chunk_rows) > 0]
    bounds = np.r_[starts[cut], sessions.shape[0]]
    for chunk, (start, stop) in enumerate(itertools.pairwise(bounds)):
        part = table.slice(int(start), int(stop - start))
        yield _Task(name, chunk, _columns(part), settings)


def _columns(table: pa.Table) -> dict[str, list[Any]]:
    return {
        "session_id": table.column("session_id").to_pylist(),
        "item_id": table.column("item_id").to_pylist(),
        "ts": table.column("ts").to_pylist(),
        "type": pc.cast(table.column("type"), pa.string()).to_pylist(),
        "category": table.column("category").to_pylist(),
        "price": table.column("price").to_pylist(),
    }


def _log_of(rows: dict[str, list[Any]]) -> EventLog:
    return build_log(
        rows["session_id"],
        rows["item_id"],
        rows["ts"],
        [EVENT_TYPE_CODES[name] for name in rows["type"]],
        rows["category"],
        rows["price"],
    )


def _replay(task: _Task) -> ExampleSet:
    settings = task.settings
    log = _log_of(task.rows)
    runs = np.arange(log.session_bounds().shape[0] - 1, dtype=np.int64)
    seed = np.random.SeedSequence([settings.seed, sum(map(ord, task.group)), task.chunk])
    return build_examples(
        log,
        runs,
        _worker_tables[task.group],
        window_config=settings.window,
        candidate_config=settings.candidates,
        negatives=settings.negatives,
        seed=int(seed.generate_state(1)[0]),
    )


def _merged(found: list[ExampleSet]) -> ExampleSet:
    kept = [s for s in found if s.labels.shape[0]]
    positions = sum(s.positions for s in found)
    covered = sum(s.covered for s in found)
    if not kept:
        empty = np.zeros((0, features.N_FEATURES), dtype=np.float32)
        return ExampleSet(empty, np.zeros(0, np.int8), np.zeros(0, np.int32), positions, covered)
    offsets = np.cumsum([0] + [s.covered for s in kept[:-1]])
    return ExampleSet(
        np.concatenate([s.features for s in kept]),
        np.concatenate([s.labels for s in kept]),
        np.concatenate([s.groups + offset for s, offset in zip(kept, offsets, strict=True)]),
        positions,
        covered,
    )
