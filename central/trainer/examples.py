"""Training examples, made by replaying sessions through the edge's own featurize seam.

For each session of the log and each event but its last, the session window takes the
event exactly as the edge would, :func:`protocol.featurize.featurize` runs on it as of
that event's time (the seam's clock policy), and the candidate that is the session's next
item is the positive. Positions whose next item is not among the candidates teach the
ranker nothing and are counted, not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from central.eventlog import EventLog
from protocol import features
from protocol.candidates import CandidateConfig
from protocol.featurize import event_time, featurize
from protocol.tables import CandidateTables
from protocol.window import SessionWindow, WindowConfig


@dataclass(frozen=True, slots=True)
class ExampleSet:
    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int8]
    groups: npt.NDArray[np.int32]  # one group per prediction position
    positions: int  # positions replayed
    covered: int  # positions whose next item was among the candidates

    @property
    def recall(self) -> float:
        return self.covered / self.positions if self.positions else 0.0


def build_examples(
    log: EventLog,
    sessions: npt.NDArray[np.int64],
    tables: CandidateTables,
    *,
    window_config: WindowConfig,
    candidate_config: CandidateConfig,
    negatives: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ExampleSet:
    """Examples from the session runs ``sessions`` (indices into ``log.session_bounds()``).

    ``negatives`` candidates are sampled per position besides the positive (all when 0).
    """
    rng = np.random.default_rng(seed)
    bounds = log.session_bounds()
    index = tables.item_index
    blocks: list[npt.NDArray[np.float32]] = []
    labels: list[npt.NDArray[np.int8]] = []
    groups: list[npt.NDArray[np.int32]] = []
    positions = covered = 0
    for run in sessions:
        start, stop = int(bounds[run]), int(bounds[run + 1])
        window = SessionWindow(log.session_ids[int(log.session[start])], window_config)
        for row in range(start, stop - 1):
            window.add(log.event(row))
            target = index.get(log.item_ids[int(log.item[row + 1])])
            positions += 1
            if target is None:
                continue
            found = featurize(window, tables, candidate_config, now_ms=event_time(window))
            hit = found.candidates.items == target
            if not hit.any():
                continue
            chosen = _sample(hit, negatives, rng)
            blocks.append(found.rows()[chosen])
            labels.append(hit[chosen].astype(np.int8))
            groups.append(np.full(chosen.shape[0], covered, dtype=np.int32))
            covered += 1
        if progress is not None:
            progress(stop - start)
    if not blocks:
        empty = np.zeros((0, features.N_FEATURES), dtype=np.float32)
        return ExampleSet(empty, np.zeros(0, np.int8), np.zeros(0, np.int32), positions, 0)
    return ExampleSet(
        np.concatenate(blocks), np.concatenate(labels), np.concatenate(groups), positions, covered
    )


def _sample(
    hit: npt.NDArray[np.bool_], negatives: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    positive = np.flatnonzero(hit)
    negative = np.flatnonzero(~hit)
    if negatives and negative.shape[0] > negatives:
        negative = rng.choice(negative, negatives, replace=False)
    return np.concatenate((positive, negative))
