"""Journal replay past a damaged record: what follows it is kept, the damage counted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from central.trainer.eventfiles import encode_record, read_journal
from central.trainer.eventstore import EventStore, StoreLimits
from tests.central.test_eventstore import START_MS, clock, item_event


def three_records(directory: Path) -> tuple[Path, list[int]]:
    """A journal of three records of ten events each, and where each record starts."""
    with EventStore.open(directory, StoreLimits(), clock=clock) as store:
        for first in (0, 10, 20):
            store.add([item_event(n) for n in range(first, first + 10)], {"t:0": first + 10})
            store.flush()
    (journal,) = directory.glob("journal-*.log")
    starts = [0]
    for record in read_journal(journal.read_bytes(), journal):
        starts.append(record.end)
    return journal, starts[:3]


def damage(journal: Path, at: int) -> None:
    data = bytearray(journal.read_bytes())
    data[at] ^= 0xFF
    journal.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["payload", "length"])
def test_a_damaged_middle_record_does_not_cut_what_follows(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    journal, starts = three_records(tmp_path)
    middle = starts[1]
    damage(journal, middle + 20 if where == "payload" else middle + 3)
    size = journal.stat().st_size

    records = list(read_journal(journal.read_bytes(), journal))
    assert [len(r.rows) for r in records] == [10, 10]
    assert records[1].skipped == starts[2] - starts[1]
    with (
        caplog.at_level(logging.WARNING, "central.trainer.eventfiles"),
        EventStore.open(tmp_path, StoreLimits(), clock=clock) as reopened,
    ):
        assert sorted(reopened.columns().ts.tolist()) == [
            START_MS + n * 1_000 for n in (*range(10), *range(20, 30))
        ]
        assert reopened.offsets == {"t:0": 30}
        assert reopened.counters.torn_bytes == 0
    assert f"skipped {starts[2] - starts[1]} damaged bytes at byte {middle}" in caplog.text
    assert journal.stat().st_size == size  # nothing after the damage was cut


def test_a_torn_tail_after_damage_is_still_cut(tmp_path: Path) -> None:
    journal, starts = three_records(tmp_path)
    damage(journal, starts[1] + 20)
    journal.write_bytes(journal.read_bytes()[:-5])  # and the last record torn
    size = journal.stat().st_size
    with EventStore.open(tmp_path, StoreLimits(), clock=clock) as reopened:
        assert len(reopened) == 10
        assert reopened.counters.torn_bytes == size - starts[1]
    assert journal.stat().st_size == starts[1]


def test_the_scan_finds_a_record_after_garbage_of_any_length(tmp_path: Path) -> None:
    good = encode_record([], {"t:0": 1}, 1)
    later = encode_record([], {"t:0": 2}, 2)
    garbage = bytes(range(256)) * 40 + b"\x83\xa4rows-but-no-record"
    records = list(read_journal(good + garbage + later, tmp_path / "journal-0.log"))
    assert [r.offsets for r in records] == [{"t:0": 1}, {"t:0": 2}]
    assert [r.skipped for r in records] == [0, len(garbage)]
