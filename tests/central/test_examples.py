from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from central.eventlog import EventLog, build_log
from central.trainer.examples import ExampleSet, build_examples
from central.trainer.tables import build_tables
from protocol.candidates import CandidateConfig
from protocol.features import N_FEATURES, Column
from protocol.tables import CandidateTables
from protocol.window import WindowConfig

# Tables from s1 a b c, s2 a c d, s3 b e, s4 f g f.
TRAINING = {"s1": "abc", "s2": "acd", "s3": "be", "s4": "fgf"}
# Replayed, with no top-up, so a pool holds only session items, neighbours and sknn items:
# q1 a b x c: after a the pool is a b c d and holds b; x is unknown to the tables; after
#    a b x the pool is a b c d e and holds c;
# q2 f e: after f the pool is f g, without e;
# q3 g g: after g the pool is f g and holds g.
REPLAYED = {"q1": "abxc", "q2": "fe", "q3": "gg"}
NO_TOP_UP = CandidateConfig(min_candidates=0)


def log_of(sessions: dict[str, str]) -> EventLog:
    keys, items, ts = [], [], []
    for number, (session, session_items) in enumerate(sessions.items()):
        for position, item in enumerate(session_items):
            keys.append(session)
            items.append(item)
            ts.append(number * 100_000 + position * 1_000)
    n = len(items)
    return build_log(keys, items, ts, [0] * n, [None] * n, [None] * n)


@pytest.fixture(scope="module")
def tables() -> CandidateTables:
    return build_tables(log_of(TRAINING))


def examples(
    tables: CandidateTables,
    runs: list[int] | None = None,
    *,
    negatives: int = 0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ExampleSet:
    log = log_of(REPLAYED)
    chosen = np.arange(len(REPLAYED)) if runs is None else np.asarray(runs)
    return build_examples(
        log, chosen.astype(np.int64), tables, window_config=WindowConfig(),
        candidate_config=NO_TOP_UP, negatives=negatives, seed=seed, progress=progress,
    )


def column(found: ExampleSet, name: str) -> list[float]:
    return [round(float(v), 6) for v in found.features[:, Column[name]]]


def test_positions_and_covered_positions_are_counted(tables: CandidateTables) -> None:
    found = examples(tables)
    assert found.positions == 5
    assert found.covered == 3
    assert found.recall == pytest.approx(0.6)


def test_each_covered_position_is_a_group_with_one_positive(tables: CandidateTables) -> None:
    found = examples(tables)
    assert found.features.shape == (4 + 5 + 2, N_FEATURES)
    assert found.features.dtype == np.float32
    assert found.labels.dtype == np.int8
    assert found.groups.tolist() == [0] * 4 + [1] * 5 + [2] * 2
    for group in range(3):
        assert int(found.labels[found.groups == group].sum()) == 1


def test_the_positive_is_the_next_item(tables: CandidateTables) -> None:
    found = examples(tables)
    positive = found.labels == 1
    # b after a: not in the session, co-visited with a at weight 1.
    # c after a b x: not in the session; covis w(b, c) + w(a, c) / 2 = 1.75.
    # g after g: the session's own last item, which never co-visits itself.
    assert [v for v, p in zip(column(found, "in_session"), positive, strict=True) if p] == [
        0.0, 0.0, 1.0,
    ]
    assert [v for v, p in zip(column(found, "is_last_item"), positive, strict=True) if p] == [
        0.0, 0.0, 1.0,
    ]
    covis = [v for v, p in zip(column(found, "covis"), positive, strict=True) if p]
    assert covis == pytest.approx([math.log1p(1.0), math.log1p(1.75), 0.0], abs=1e-6)


def test_negatives_are_sampled_per_position(tables: CandidateTables) -> None:
    found = examples(tables, negatives=1)
    assert found.covered == 3
    assert found.features.shape[0] == 2 + 2 + 2
    for group in range(3):
        in_group = found.labels[found.groups == group]
        assert in_group.tolist().count(1) == 1
        assert in_group.shape[0] == 2


def test_sampling_is_seeded(tables: CandidateTables) -> None:
    first = examples(tables, negatives=2, seed=7)
    second = examples(tables, negatives=2, seed=7)
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_only_the_given_sessions_are_replayed(tables: CandidateTables) -> None:
    found = examples(tables, runs=[1, 2])
    assert found.positions == 2
    assert found.covered == 1
    assert found.groups.tolist() == [0, 0]


def test_uncovered_sessions_give_an_empty_set(tables: CandidateTables) -> None:
    found = examples(tables, runs=[1])
    assert found.positions == 1
    assert found.covered == 0
    assert found.recall == 0.0
    assert found.features.shape == (0, N_FEATURES)
    assert found.labels.shape == (0,)
    assert found.groups.shape == (0,)


def test_no_sessions_give_no_positions(tables: CandidateTables) -> None:
    found = examples(tables, runs=[])
    assert found.positions == 0
    assert found.recall == 0.0


def test_progress_reports_each_session_s_events(tables: CandidateTables) -> None:
    seen: list[int] = []
    examples(tables, progress=seen.append)
    assert seen == [4, 2, 2]
