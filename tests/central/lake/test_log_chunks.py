"""Reading a log a chunk at a time (what the lake's importer reads with): the rows and
errors of read_log, also when a bad row comes after batches Arrow has tokenized."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from central.datasets import LogChunks, read_log
from central.errors import DataFormatError

ROWS = 3_000
BAD_LINE = 2_500  # the header is line 1


def write_log(path: Path, bad: str | None) -> None:
    lines = ["session_id,item_id,timestamp,event_type,price"]
    for n in range(ROWS):
        lines.append(f"s{n // 7},i{n % 91},{1_700_000_000 + n},view,{n % 13}.5")
    if bad is not None:
        lines[BAD_LINE - 1] = bad
    path.write_text("\n".join(lines) + "\n")


def chunked(path: Path, **options: object) -> tuple[pa.Table, LogChunks]:
    with LogChunks(path, "csv", block_bytes=4096, chunk_rows=700, **options) as chunks:  # type: ignore[arg-type]
        return pa.concat_tables(list(chunks)), chunks


def test_chunks_hold_every_row_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    write_log(path, None)
    table, chunks = chunked(path)
    assert table.num_rows == ROWS == chunks.tally.read
    assert table.column("key").to_pylist()[:8] == ["s0"] * 7 + ["s1"]
    assert table.column("time").to_pylist()[-1] == 1_700_000_000 + ROWS - 1


@pytest.mark.parametrize(
    ("bad", "problem"),
    [("s1,i1,12:00,view,1", "timestamp"), ("s1,i1", "expected 5 columns"),
     ("s1,i1,5,flying,1", "unknown event_type"), (' s1 ,"i1",5,view,', None)],
)  # fmt: skip
def test_a_row_after_arrow_batches_is_read_with_its_line(
    tmp_path: Path, bad: str, problem: str | None
) -> None:
    path = tmp_path / "log.csv"
    write_log(path, bad)
    if problem is None:  # padded but valid: read row by row, kept, stripped
        table, chunks = chunked(path)
        assert table.num_rows == ROWS and chunks.tally.skipped == 0
        assert table.column("key").to_pylist()[BAD_LINE - 2] == "s1"
        assert read_log(path, "csv")[0].n_events == ROWS
        return
    with pytest.raises(DataFormatError, match=f"log.csv:{BAD_LINE}: .*{problem}"):
        chunked(path)
    with pytest.raises(DataFormatError, match=f"log.csv:{BAD_LINE}: .*{problem}"):
        read_log(path, "csv")
    table, chunks = chunked(path, skip_bad_rows=True)
    assert table.num_rows == ROWS - 1 and chunks.tally.skipped == 1
    assert chunks.tally.read == ROWS
    assert chunks.tally.reasons[0].startswith(f"line {BAD_LINE}:")
