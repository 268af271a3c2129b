from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.uplink.errors import (
    RecordTooLargeError,
    SpoolClosedError,
    SpoolFullError,
    SpoolLockedError,
)
from edge_node.uplink.spool import (
    FRAME_OVERHEAD,
    MAX_RECORD_BYTES,
    SEGMENT_HEADER,
    Record,
    Spool,
    frames_size,
)


def payloads(count: int, start: int = 0, size: int = 40) -> list[bytes]:
    return [f"record-{n:06d}-".encode().ljust(size, b".") for n in range(start, start + count)]


def read_all(spool: Spool) -> list[Record]:
    records: list[Record] = []
    while batch := spool.read(max_records=7):
        records.extend(batch)
    return records


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_round_trip_across_segment_rolls(tmp_path: Path) -> None:
    written = payloads(100)
    with Spool(tmp_path, segment_bytes=1024) as spool:
        for start in range(0, 100, 3):
            spool.append(written[start : start + 3])
        assert spool.last_seq == 100
        records = read_all(spool)
    assert [record.seq for record in records] == list(range(1, 101))
    assert [record.payload for record in records] == written
    files = segment_files(tmp_path)
    assert len(files) > 5
    assert files[0].name == "00000000000000000001.seg"
    assert all(path.read_bytes().startswith(SEGMENT_HEADER) for path in files)


def test_append_returns_last_sequence_and_ignores_empty_batches(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        assert spool.append(payloads(3)) == 3
        assert spool.append([]) == 3
        assert spool.append(payloads(2, 3)) == 5
        assert spool.pending_records == 5
        assert spool.pending_bytes == frames_size(payloads(5))


def test_read_respects_record_and_byte_limits(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(10, size=100))
        assert [r.seq for r in spool.read(max_records=3)] == [1, 2, 3]
        assert [r.seq for r in spool.read(max_bytes=250)] == [4, 5]
        assert [r.seq for r in spool.read(max_bytes=1)] == [6]  # at least one record
        assert [r.seq for r in spool.read()] == [7, 8, 9, 10]
        assert spool.read() == []
        assert not spool.has_unread


def test_reader_sees_records_appended_after_it_caught_up(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=512) as spool:
        for round_ in range(20):
            spool.append(payloads(2, round_ * 2))
            assert spool.has_unread
            assert [r.seq for r in spool.read()] == [round_ * 2 + 1, round_ * 2 + 2]
            assert not spool.has_unread


def test_reopen_resumes_after_commit_and_redelivers_the_rest(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1024) as spool:
        spool.append(payloads(50))
        assert len(spool.read(max_records=30)) == 30
        spool.commit(20)
        assert spool.committed_seq == 20
        assert spool.pending_records == 30
    with Spool(tmp_path, segment_bytes=1024) as spool:
        assert spool.recovery.pending_records == 30
        assert spool.recovery.torn_tail_bytes == 0
        records = read_all(spool)
        assert [r.seq for r in records] == list(range(21, 51))
        assert [r.payload for r in records] == payloads(30, 20)
        assert spool.append(payloads(1, 50)) == 51


def test_rewind_redelivers_uncommitted_records(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(10))
        spool.read(max_records=4)
        spool.commit(2)
        spool.read(max_records=4)
        spool.rewind()
        assert [r.seq for r in spool.read()] == list(range(3, 11))


def test_commit_refuses_records_not_read(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(5))
        spool.read(max_records=2)
        with pytest.raises(ValueError, match="not read"):
            spool.commit(3)
        spool.commit(2)
        spool.commit(1)  # going back is a no-op
        assert spool.committed_seq == 2


def test_consumed_segments_are_deleted(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1024) as spool:
        spool.append(payloads(60))  # one append never spans segments
        for start in range(60, 200, 5):
            spool.append(payloads(5, start))
        before = segment_files(tmp_path)
        records = read_all(spool)
        spool.commit(records[-1].seq)
        after = segment_files(tmp_path)
        assert len(before) > 3
        assert after == [before[-1]]
        assert spool.pending_bytes == 0
        assert spool.pending_records == 0
        spool.append(payloads(1, 200))
        assert spool.pending_bytes == frames_size(payloads(1))


def test_partially_consumed_spool_counts_only_pending_bytes(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1024) as spool:
        for start in range(0, 100, 4):
            spool.append(payloads(4, start))
        spool.read(max_records=37)
        spool.commit(37)
        assert spool.pending_bytes == frames_size(payloads(63))
    with Spool(tmp_path, segment_bytes=1024) as spool:
        assert spool.pending_bytes == frames_size(payloads(63))


def test_torn_tail_mid_frame_is_cut(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(10))
    segment = segment_files(tmp_path)[-1]
    full_size = segment.stat().st_size
    os.truncate(segment, full_size - 15)
    with Spool(tmp_path) as spool:
        assert spool.recovery.torn_tail_bytes == len(payloads(1)[0]) + FRAME_OVERHEAD - 15
        assert spool.last_seq == 9
        assert spool.append([b"after the crash"]) == 10
        records = read_all(spool)
    assert [r.payload for r in records] == [*payloads(9), b"after the crash"]
    assert spool.records_lost == 0


def test_garbage_after_last_frame_is_cut(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(5))
    segment = segment_files(tmp_path)[-1]
    with segment.open("ab") as file:
        file.write(b"\xa9PXR" + os.urandom(200))
    with Spool(tmp_path) as spool:
        assert spool.recovery.torn_tail_bytes == 204
        assert [r.seq for r in read_all(spool)] == [1, 2, 3, 4, 5]


def test_segment_shorter_than_its_header_is_reset(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001.seg").write_bytes(b"PXS")
    with Spool(tmp_path) as spool:
        assert spool.recovery.torn_tail_bytes == 3
        assert spool.append([b"first"]) == 1
        assert read_all(spool) == [Record(1, b"first")]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def frame_offset(index: int, size: int = 40) -> int:
    return len(SEGMENT_HEADER) + index * (FRAME_OVERHEAD + size)


def test_damaged_record_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(10))
    flip_byte(segment_files(tmp_path)[0], frame_offset(4) + FRAME_OVERHEAD + 3)
    with Spool(tmp_path) as spool:
        assert spool.recovery.damaged_bytes == FRAME_OVERHEAD + 40
        assert spool.recovery.torn_tail_bytes == 0
        records = read_all(spool)
        assert [r.seq for r in records] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
        assert spool.corrupt_bytes_skipped == FRAME_OVERHEAD + 40
        assert spool.records_lost == 1
        assert spool.append([b"next"]) == 11


def test_damage_in_an_older_segment_is_skipped_by_the_reader(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1024) as spool:
        for start in range(0, 60, 5):
            spool.append(payloads(5, start))
    first = segment_files(tmp_path)[0]
    flip_byte(first, frame_offset(2) + 6)  # the length field of record 3
    with Spool(tmp_path, segment_bytes=1024) as spool:
        assert spool.recovery.damaged_bytes == 0  # only the newest segment is scanned on open
        seqs = [r.seq for r in read_all(spool)]
        assert seqs == [n for n in range(1, 61) if n != 3]
        assert spool.records_lost == 1
        assert spool.corrupt_bytes_skipped == FRAME_OVERHEAD + 40


def test_records_lost_at_the_end_of_an_older_segment_are_counted(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1024) as spool:
        for start in range(0, 60, 5):
            spool.append(payloads(5, start))
    first = segment_files(tmp_path)[0]
    os.truncate(first, first.stat().st_size - 10)
    with Spool(tmp_path, segment_bytes=1024) as spool:
        records = read_all(spool)
    assert records[0].seq == 1
    assert len(records) == 59
    assert spool.records_lost == 1
    assert spool.corrupt_bytes_skipped == FRAME_OVERHEAD + 40 - 10


def test_full_spool_raises_until_records_are_committed(tmp_path: Path) -> None:
    limit = frames_size(payloads(10))
    with Spool(tmp_path, max_bytes=limit) as spool:
        spool.append(payloads(10))
        assert spool.free_bytes == 0
        with pytest.raises(SpoolFullError):
            spool.append(payloads(1, 10))
        assert spool.last_seq == 10
        spool.read(max_records=3)
        spool.commit(3)
        assert spool.append(payloads(3, 10)) == 13
        with pytest.raises(SpoolFullError):
            spool.append(payloads(1, 13))


def test_record_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append([b"x" * MAX_RECORD_BYTES])
        with pytest.raises(RecordTooLargeError):
            spool.append([b"ok", b"x" * (MAX_RECORD_BYTES + 1)])
        assert spool.last_seq == 1


def test_damaged_cursor_redelivers_everything_on_disk(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(6))
        spool.read()
        spool.commit(4)
    flip_byte(tmp_path / "cursor", 5)
    with Spool(tmp_path) as spool:
        assert spool.committed_seq == 0
        assert [r.seq for r in read_all(spool)] == [1, 2, 3, 4, 5, 6]


def test_cursor_ahead_of_the_data_never_reuses_committed_sequences(tmp_path: Path) -> None:
    # A machine crash can keep the fsynced cursor but lose the unsynced end of a segment.
    with Spool(tmp_path) as spool:
        spool.append(payloads(10))
        spool.read()
        spool.commit(10)
    os.truncate(segment_files(tmp_path)[0], frame_offset(6))
    with Spool(tmp_path) as spool:
        assert spool.pending_records == 0
        assert spool.append([b"new"]) == 11
        assert read_all(spool) == [Record(11, b"new")]
        assert spool.records_lost == 0


def test_a_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolLockedError):
        Spool(tmp_path)
    Spool(tmp_path).close()


def test_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.close()
    spool.close()
    with pytest.raises(SpoolClosedError):
        spool.append([b"late"])
    with pytest.raises(SpoolClosedError):
        spool.read()


def test_oldest_pending_age_follows_the_cursor(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        assert spool.oldest_pending_age_s == 0.0
        spool.append(payloads(3))
        assert spool.oldest_pending_age_s >= 0.0
        spool.read()
        spool.commit(3)
        assert spool.oldest_pending_age_s == 0.0


def test_cursor_file_is_checksummed(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append([b"a"])
        spool.read()
        spool.commit(1)
    data = (tmp_path / "cursor").read_bytes()
    assert data[:4] == b"PXCR"
    assert int.from_bytes(data[12:], "little") == zlib.crc32(data[:12])


@settings(max_examples=40, deadline=None)
@given(
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 6)),
            st.tuples(st.just("read"), st.integers(1, 5)),
            st.tuples(st.just("commit"), st.integers(0, 5)),
            st.tuples(st.just("reopen"), st.just(0)),
        ),
        max_size=40,
    )
)
def test_spool_matches_a_simple_model(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[str, int]]
) -> None:
    directory = tmp_path_factory.mktemp("model")
    spool = Spool(directory, segment_bytes=400)
    appended: list[bytes] = []
    committed = 0
    delivered: list[Record] = []
    try:
        for name, amount in operations:
            if name == "append":
                spool.append(payloads(amount, len(appended)))
                appended.extend(payloads(amount, len(appended)))
            elif name == "read":
                delivered.extend(spool.read(max_records=amount))
            elif name == "commit" and delivered:
                target = delivered[min(amount, len(delivered) - 1)].seq
                spool.commit(target)
                committed = max(committed, target)
            elif name == "reopen":
                spool.close()
                spool = Spool(directory, segment_bytes=400)
                delivered = []
            assert spool.pending_records == len(appended) - committed
        rest = read_all(spool)
        seen = [r.seq for r in delivered if r.seq > committed] + [r.seq for r in rest]
        assert seen == list(range(committed + 1, len(appended) + 1))
        assert [r.payload for r in rest] == appended[len(appended) - len(rest) :]
        assert spool.records_lost == 0
    finally:
        spool.close()
