"""Retention and compaction: what they keep, and what a crash in the middle leaves."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from pathlib import Path

import pytest

import central.lake.commit as commit_module
from central.lake.buffer import PartitionBuffer
from central.lake.commit import Stager, recover
from central.lake.layout import LakeLayout, open_lake
from central.lake.maintenance import apply_retention, compact, sweep
from central.lake.offsets import high_water
from central.lake.writer import commit_buffer
from tests.central.lake.streams import encoded, event_id_counts, make_events

COMMITS = 6
PER_COMMIT = 40


def die(stager: Stager) -> None:
    """As if the stager's process died: its lock goes with it, its staging stays."""
    assert stager._lock_fd is not None
    os.close(stager._lock_fd)
    stager._lock_fd = None


def filled_lake(root: Path, partitions: int = 2) -> LakeLayout:
    """COMMITS small commits per partition, each spread over three days."""
    layout = open_lake(root, create=True)
    stager = Stager(layout)
    events = make_events(COMMITS * PER_COMMIT * partitions, days=3)
    values, _ = encoded(events)
    offsets = dict.fromkeys(range(partitions), 0)
    buffers = {p: PartitionBuffer(p, 0) for p in range(partitions)}
    for n, (event, value) in enumerate(zip(events, values, strict=True)):
        partition = n % partitions
        buffers[partition].add(event, offsets[partition], len(value))
        offsets[partition] += 1
        if buffers[partition].rows == PER_COMMIT:
            commit_buffer(stager, "t", buffers[partition])
            buffers[partition].committed()
    stager.close()
    return layout


def test_compaction_keeps_every_row_once_and_the_offsets(tmp_path: Path) -> None:
    layout = filled_lake(tmp_path / "lake")
    before, marks = event_id_counts(layout.root), high_water(layout)
    assert len(layout.data_files()) == COMMITS * 2 * 3
    stager = Stager(layout)
    done = compact(layout, stager, min_files=3)
    stager.close()
    assert len(done) == 2 * 3
    assert len(layout.data_files()) == 2 * 3  # one per day and partition
    assert event_id_counts(layout.root) == before and set(before.values()) == {1}
    assert high_water(layout) == marks
    assert compact(layout, Stager(layout), min_files=3) == []  # nothing small left to join


def test_compaction_interrupted_after_its_rename_shows_no_row_twice(tmp_path: Path) -> None:
    layout = filled_lake(tmp_path / "lake", partitions=1)
    before = event_id_counts(layout.root)
    inputs = {path: path.read_bytes() for path in layout.data_files()}
    stager = Stager(layout)
    compact(layout, stager, min_files=3)
    stager.close()
    for path, data in inputs.items():  # as if the inputs' removal never happened
        path.write_bytes(data)
    assert event_id_counts(layout.root) == before  # superseded files are not read
    assert sweep(layout) == len(inputs)
    assert event_id_counts(layout.root) == before


def test_compaction_killed_past_its_commit_point_is_finished_by_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = filled_lake(tmp_path / "lake", partitions=1)
    before = event_id_counts(layout.root)

    def killed(layout: LakeLayout, directory: Path) -> None:
        raise OSError("killed")

    monkeypatch.setattr(commit_module, "_carry_out", killed)
    stager = Stager(layout)
    with pytest.raises(OSError, match="killed"):
        compact(layout, stager, min_files=3)
    monkeypatch.undo()
    die(stager)
    assert event_id_counts(layout.root) == before
    assert recover(layout).completed == 1
    assert event_id_counts(layout.root) == before
    assert len(layout.data_files()) == 1 + 2 * COMMITS  # the first day's run is compacted
    assert sweep(layout) == 0


def test_a_commit_killed_before_its_commit_point_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = filled_lake(tmp_path / "lake", partitions=1)
    before = event_id_counts(layout.root)

    def killed(path: Path, data: bytes) -> None:
        raise OSError("killed")

    monkeypatch.setattr(commit_module, "atomic_write_bytes", killed)
    stager = Stager(layout)
    with pytest.raises(OSError, match="killed"):
        compact(layout, stager, min_files=3)
    monkeypatch.undo()
    assert recover(layout).completed == 0  # a live owner's staging is left alone
    die(stager)
    recover(layout)
    assert event_id_counts(layout.root) == before
    assert len(layout.data_files()) == 3 * COMMITS


def test_retention_deletes_old_days_and_remembers_their_offsets(tmp_path: Path) -> None:
    layout = filled_lake(tmp_path / "lake")
    marks = high_water(layout)
    days = layout.days()
    assert len(days) == 3
    today = dt.date.fromisoformat(days[-1])
    assert apply_retention(layout, 0, today=today) == []
    assert apply_retention(layout, 1, today=today) == [days[0]]
    assert layout.days() == days[1:]
    assert high_water(layout) == marks  # a writer does not read the deleted days again
    kept = event_id_counts(layout.root)
    assert sum(kept.values()) == COMMITS * PER_COMMIT * 2 * 2 // 3 and set(kept.values()) == {1}
    kept_days = Counter(p.parent.name for p in layout.data_files())
    assert kept_days.keys() == {f"date={d}" for d in days[1:]}
