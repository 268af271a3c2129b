"""The featurize seam: session window → candidates → feature rows.

This is the one place that composes candidate generation and the feature code. The edge
serves through it (:meth:`protocol.serving.ServingModel.rank`), the trainer builds its
examples through it (:func:`central.trainer.examples.build_examples`) and the offline
replay scores through the serving method, so a row means the same thing in all three.

Clock policy. ``since_seen`` and ``session_age`` depend on what time it is, so every
caller names the time explicitly:

* at the edge, ``now_ms`` is the request's time: a request comes after the last event of
  its session, and the time since then is part of what the edge knows;
* in training and in the offline replay, ``now_ms`` is :func:`event_time`, the time of
  the window's last event, i.e. of the event just replayed, after which the prediction
  is made. A page asks for recommendations as it renders the view it has just reported,
  so the request's time is that event's time plus a round trip; this is the nearest
  time a log can give. The next event's time is not used: it is part of what is being
  predicted (how long the user stayed), and no edge knows it when it answers.

In both cases a ``now_ms`` before the window's last event counts as that event's time
(see :func:`protocol.features.refresh_clock`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol import candidates as candidate_generation
from protocol import features
from protocol.candidates import CandidateConfig, Candidates
from protocol.tables import CandidateTables
from protocol.window import SessionWindow

Matrix = npt.NDArray[np.float32]


def event_time(window: SessionWindow) -> int:
    """The training and replay clock: the time of the window's last event.

    An empty window's rows do not depend on the clock (no item seen, no age), so it
    gives 0 rather than failing.
    """
    last = window.last_ts
    return last if last is not None else 0


@dataclass(slots=True, eq=False)
class Featurized:
    """A window's candidates, and its feature rows as of ``now_ms`` once asked for.

    Rows are computed on the first :meth:`rows` call, so a caller that has no use for
    them (a cold window at the edge, a position whose target is not a candidate in
    training) does not pay for them.
    """

    window: SessionWindow
    tables: CandidateTables
    candidates: Candidates
    now_ms: int
    _matrix: Matrix | None = None
    _cache: RankCache | None = field(default=None, repr=False)
    _stale: bool = False  # _matrix came from the cache with another call's clock columns

    @property
    def cold(self) -> bool:
        """No item of the window is known to the tables: the ranker has nothing to go on."""
        return self.candidates.session_items.size == 0

    def rows(self) -> Matrix:
        """``[len(candidates), N_FEATURES]`` feature rows in :class:`~protocol.features.Column`
        order. With a cache, the matrix is shared with later calls for the same window
        revision, which refresh its clock columns in place."""
        matrix = self._matrix
        if matrix is None:
            matrix = features.compute(self.window, self.candidates, self.tables, self.now_ms)
            if self._cache is not None:
                self._cache.put(self.window, self.candidates, matrix)
            self._matrix = matrix
        elif self._stale:
            features.refresh_clock(matrix, self.window, self.candidates, self.tables, self.now_ms)
            self._stale = False
        return matrix


def featurize(
    window: SessionWindow,
    tables: CandidateTables,
    config: CandidateConfig,
    *,
    now_ms: int,
    cache: RankCache | None = None,
) -> Featurized:
    """Candidates for ``window`` and (lazily) their feature rows as of ``now_ms``.

    ``now_ms`` follows the module's clock policy: the request's time at the edge,
    :func:`event_time` in training and replay. With a ``cache``, a window whose revision
    was featurized before reuses its candidates and rows, and only the clock columns are
    recomputed.
    """
    cached = cache.get(window) if cache is not None else None
    if cached is not None:
        found, matrix = cached
        return Featurized(window, tables, found, now_ms, matrix, cache, _stale=True)
    found = candidate_generation.generate(window, tables, config)
    return Featurized(window, tables, found, now_ms, None, cache)


class RankCache:
    """Candidates and feature rows of the most recently featurized windows, by revision.

    A page asks for recommendations several times between two events of its session
    (page render, other slots, the WebSocket push); while the window is unchanged only
    the clock-dependent feature columns are recomputed. Bounded by ``max_sessions``.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._entries: OrderedDict[str, tuple[int, Candidates, Matrix]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, window: SessionWindow) -> tuple[Candidates, Matrix] | None:
        entry = self._entries.get(window.session_id)
        if entry is None or entry[0] != window.revision:
            self.misses += 1
            return None
        self._entries.move_to_end(window.session_id)
        self.hits += 1
        return entry[1], entry[2]

    def put(self, window: SessionWindow, found: Candidates, matrix: Matrix) -> None:
        self._entries[window.session_id] = (window.revision, found, matrix)
        self._entries.move_to_end(window.session_id)
        if len(self._entries) > self.max_sessions:
            self._entries.popitem(last=False)
