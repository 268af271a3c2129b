"""The evaluation split of EVALUATION.md, steps 2 and 3.

It follows the preprocessing of the public session-rec framework step for step, so that
figures measured on its output can be set beside published ones:

1. drop sessions of length 1;
2. drop items seen fewer than ``min_item_support`` times (counted after step 1);
3. drop sessions left shorter than 2;
4. split by time: a session is a test session when its last event is at or after
   ``tmax - test_days`` (``tmax``: the latest event left), a training session otherwise;
5. drop test events whose item is not among the training items;
6. drop test sessions left shorter than 2.

Both sides keep the vocabularies of the input log, so item codes mean the same in each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from central.errors import SplitError
from central.eventlog import EventLog

MS_PER_DAY = 86_400_000
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Split:
    train: EventLog
    test: EventLog
    train_events: int
    train_sessions: int
    test_sessions: int
    test_events: int
    test_from_ms: int  # a session whose last event is at or after this is a test session

    @property
    def predictions(self) -> int:
        """Next-item predictions a replay of ``test`` makes: one per event but the last."""
        return self.test_events - self.test_sessions


def prepare(log: EventLog, *, test_days: float = 7, min_item_support: int = 5) -> Split:
    """Filters ``log`` and splits it by time into training and test sessions."""
    if test_days <= 0:
        raise SplitError(f"test_days must be positive, got {test_days}")
    keep = np.ones(log.n_events, dtype=bool)
    keep &= _session_lengths(log, keep)[log.session] > 1
    item_support = np.bincount(log.item[keep], minlength=len(log.item_ids))
    keep &= item_support[log.item] >= min_item_support
    keep &= _session_lengths(log, keep)[log.session] >= 2
    if not keep.any():
        raise SplitError(
            "no session of two or more events is left after dropping items seen fewer than "
            f"{min_item_support} times"
        )
    return _split_by_time(log, keep, test_days)


def validation_split(train: EventLog, *, days: float) -> Split:
    """Splits a training log as :func:`prepare` splits the whole log (steps 4-6 only).

    The training log is already filtered, so only the time split and the test-side
    filters apply; it is for choosing settings without looking at the test split.
    """
    if days <= 0:
        raise SplitError(f"days must be positive, got {days}")
    return _split_by_time(train, np.ones(train.n_events, dtype=bool), days)


def _split_by_time(log: EventLog, keep: BoolArray, days: float) -> Split:
    if not keep.any():
        raise SplitError("the log holds no events to split")
    tmax = int(log.ts[keep].max())
    test_from = tmax - round(days * MS_PER_DAY)
    last_event = np.full(len(log.session_ids), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_event, log.session[keep], log.ts[keep])
    is_test_session = last_event >= test_from

    in_test = is_test_session[log.session]
    train_rows = keep & ~in_test
    test_rows = keep & in_test
    if not train_rows.any():
        raise SplitError(
            f"every session ends in the last {days:g} days: nothing is left to train on"
        )
    known_item = np.zeros(len(log.item_ids), dtype=bool)
    known_item[log.item[train_rows]] = True
    test_rows &= known_item[log.item]
    test_rows &= _session_lengths(log, test_rows)[log.session] >= 2
    if not test_rows.any():
        raise SplitError(
            f"no session of two or more known items ends in the last {days:g} days: "
            "nothing is left to test on"
        )
    return Split(
        train=log.select(train_rows),
        test=log.select(test_rows),
        train_events=int(train_rows.sum()),
        train_sessions=_count_sessions(log, train_rows),
        test_sessions=_count_sessions(log, test_rows),
        test_events=int(test_rows.sum()),
        test_from_ms=test_from,
    )


def _session_lengths(log: EventLog, rows: BoolArray) -> npt.NDArray[np.int64]:
    """Events per session code, counting only ``rows``."""
    return np.bincount(log.session[rows], minlength=len(log.session_ids)).astype(np.int64)


def _count_sessions(log: EventLog, rows: BoolArray) -> int:
    return int(np.count_nonzero(_session_lengths(log, rows)))
