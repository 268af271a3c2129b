from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from central.datasets import LogFormat, read_log
from central.errors import DataFormatError
from central.eventlog import EventLog
from protocol.events import EVENT_TYPES
from tests.central.test_split import shared_data_file

DIGINETICA_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n"


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


Row = tuple[str, str, int, str, str | None, float | None]


def rows_of(log: EventLog) -> list[Row]:
    """(session, item, ts, type, category, price) per row, in log order."""
    out: list[Row] = []
    for row in range(log.n_events):
        event = log.event(row)
        out.append((event.session_id, event.item_id or "", event.ts, event.type, event.category,
                    event.price))
    return out


def midnight_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * 1000


def test_diginetica_time_is_midnight_utc_plus_the_timeframe(tmp_path: Path) -> None:
    path = write(tmp_path, DIGINETICA_HEADER
                 + "1;NA;81766;526309;2016-05-09\n1;NA;31331;1031018;2016-05-09\n"
                 + "2;17;9654;75848;2016-01-03\n")
    log, stats = read_log(path, "diginetica")
    assert rows_of(log) == [
        ("1", "81766", midnight_ms("2016-05-09") + 526309, "view", None, None),
        ("1", "31331", midnight_ms("2016-05-09") + 1031018, "view", None, None),
        ("2", "9654", midnight_ms("2016-01-03") + 75848, "view", None, None),
    ]
    assert (stats.rows_read, stats.rows_skipped, stats.sessions_from_users) == (3, 0, 0)


def test_diginetica_accepts_the_original_camel_case_header(tmp_path: Path) -> None:
    path = write(tmp_path, "sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;0;2016-05-09\n")
    log, _ = read_log(path, "diginetica")
    assert log.item_ids == ["5"]


def test_csv_with_every_column_in_any_order_ignoring_unknown_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "price,note,event_type,timestamp,item_id,category,session_id\n"
                 "9.5,x,add_to_cart,1600000000,i1,shoes,s1\n"
                 ",y,,1600000060,i2,,s1\n"
                 "0,z,purchase,1600000120,i1,shoes,s1\n")
    log, _ = read_log(path, "csv")
    assert rows_of(log) == [
        ("s1", "i1", 1600000000000, "add_to_cart", "shoes", 9.5),
        ("s1", "i2", 1600000060000, "view", None, None),
        ("s1", "i1", 1600000120000, "purchase", "shoes", 0.0),
    ]


def test_every_protocol_event_type_is_read(tmp_path: Path) -> None:
    lines = [f"s1,i1,{1600000000 + n},{name}" for n, name in enumerate(EVENT_TYPES)]
    path = write(tmp_path, "session_id,item_id,timestamp,event_type\n" + "\n".join(lines))
    log, _ = read_log(path, "csv")
    assert [event.type for event in log.events(0, log.n_events)] == list(EVENT_TYPES)


@pytest.mark.parametrize(
    ("stamps", "expected_ms"),
    [
        (["1600000000", "1600000001"], [1600000000000, 1600000001000]),
        (["1600000000.25", "1600000001"], [1600000000250, 1600000001000]),
        (["1600000000000", "1600000000500"], [1600000000000, 1600000000500]),
        (["9999999999", "5"], [9999999999000, 5000]),
        (["100000000000", "5"], [100000000000, 5]),
    ],
)
def test_timestamps_in_seconds_or_milliseconds_are_decided_per_file(
    tmp_path: Path, stamps: list[str], expected_ms: list[int]
) -> None:
    body = "".join(f"s{n},i,{stamp}\n" for n, stamp in enumerate(stamps))
    log, _ = read_log(write(tmp_path, "session_id,item_id,timestamp\n" + body), "csv")
    assert sorted(log.ts.tolist()) == sorted(expected_ms)


def test_timestamps_beyond_milliseconds_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "session_id,item_id,timestamp\ns1,i,1600000000000000\n")
    with pytest.raises(DataFormatError, match="microseconds"):
        read_log(path, "csv")


def test_a_log_of_people_is_cut_into_sessions_after_30_quiet_minutes(tmp_path: Path) -> None:
    # u1: 0, 600, 2400 (30 min after 600: same session), 4201 (30 min 1 s: a new one);
    # u2 interleaved and out of order.
    path = write(tmp_path, "user_id,item_id,timestamp\n"
                 "u1,a,1000000000\nu2,x,1000009000\nu1,b,1000000600\nu1,c,1000002400\n"
                 "u2,y,1000000000\nu1,d,1000004201\n")
    log, stats = read_log(path, "csv")
    sessions: dict[str, list[str]] = {}
    for session, item, *_ in rows_of(log):
        sessions.setdefault(session, []).append(item)
    assert sessions == {"u1#1": ["a", "b", "c"], "u1#2": ["d"], "u2#1": ["y"], "u2#2": ["x"]}
    assert stats.sessions_from_users == 4


def test_the_session_gap_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,item_id,timestamp\nu1,a,1000000000\nu1,b,1000000600\n")
    log, stats = read_log(path, "csv", session_gap_s=599)
    assert log.session_ids == ["u1#1", "u1#2"]
    assert stats.sessions_from_users == 2


def test_a_session_id_column_wins_over_user_id(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,session_id,item_id,timestamp\nu1,s1,a,0\nu1,s1,b,99999\n")
    log, stats = read_log(path, "csv")
    assert log.session_ids == ["s1"]
    assert stats.sessions_from_users == 0


CSV_HEADER = "session_id,item_id,timestamp,event_type,price\n"


@pytest.mark.parametrize(
    ("fmt", "text", "line", "problem"),
    [
        ("csv", CSV_HEADER + "s1,i1,1,view,1\ns1,i2,2,view\n", 3, "expected 5 columns, found 4"),
        ("csv", CSV_HEADER + "s1,i1,soon,view,1\n", 2, "timestamp 'soon' is not a number"),
        ("csv", CSV_HEADER + "s1,i1,-4,view,1\n", 2, "not a finite number >= 0"),
        ("csv", CSV_HEADER + "s1,i1,1,like,1\n", 2, "unknown event_type 'like'"),
        ("csv", CSV_HEADER + "s1,i1,1,view,1\n\ns1, ,2,view,1\n", 4, "empty item_id"),
        ("csv", CSV_HEADER + "s1,i1,1,view,cheap\n", 2, "price 'cheap' is not a number"),
        ("csv", CSV_HEADER + ",i1,1,view,1\n", 2, "empty session_id"),
        ("diginetica", DIGINETICA_HEADER + "1;NA;5;0;2016-13-01\n", 2, "not a calendar date"),
        ("diginetica", DIGINETICA_HEADER + "1;NA;5;0;09/05/2016\n", 2, "not a YYYY-MM-DD date"),
        ("diginetica", DIGINETICA_HEADER + "1;NA;5;0.5;2016-05-09\n", 2,
         "timeframe '0.5' is not a whole number"),
        ("diginetica", DIGINETICA_HEADER + "1;NA;5;0;2016-05-09;x\n", 2, "found 6"),
        ("diginetica", DIGINETICA_HEADER + "1;NA;;0;2016-05-09\n", 2, "empty item_id"),
    ],
)
def test_a_malformed_row_names_the_file_line_and_problem(
    tmp_path: Path, fmt: LogFormat, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError) as caught:
        read_log(path, fmt)
    assert caught.value.line == line
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert problem in str(caught.value)


def test_skip_bad_rows_counts_and_explains_what_it_skipped(tmp_path: Path) -> None:
    body = "".join(f"s1,i{n},{n},view,1\n" for n in range(3))
    bad = "s2,i9,x,view,1\n" * 7 + "s2,i9,3,view\n"
    path = write(tmp_path, CSV_HEADER + body + bad)
    log, stats = read_log(path, "csv", skip_bad_rows=True)
    assert log.n_events == 3
    assert (stats.rows_read, stats.rows_skipped, stats.rows_kept) == (11, 8, 3)
    assert len(stats.skip_reasons) == 5
    assert stats.skip_reasons[0] == "line 5: timestamp 'x' is not a number"


@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        ("csv", "", "the file is empty"),
        ("csv", "\n\n", "the file is empty"),
        ("csv", "session_id,item_id\ns1,i1\n", "lacks column(s) timestamp"),
        ("csv", "item_id,timestamp\ni1,1\n", "session_id (or user_id for a log of people)"),
        ("csv", "session_id,item_id,timestamp,item_id\n", "repeats column(s) item_id"),
        ("csv", "session_id,item_id,timestamp\n", "no usable event rows"),
        ("diginetica", "session_id;item_id;eventdate\n", "lacks column(s) user_id, timeframe"),
    ],
)
def test_a_file_without_a_usable_header_or_rows_is_refused(
    tmp_path: Path, fmt: LogFormat, text: str, message: str
) -> None:
    with pytest.raises(DataFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_log(write(tmp_path, text), fmt)


def test_a_missing_file_is_a_data_format_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="cannot read the file"):
        read_log(tmp_path / "absent.csv", "csv")


def test_a_utf8_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfsession_id,item_id,timestamp\ns1,\xc3\xa9t\xc3\xa9,1\n")
    log, _ = read_log(path, "csv")
    assert log.item_ids == ["\u00e9t\u00e9"]


def test_the_diginetica_sample_reads_as_documented() -> None:
    log, stats = read_log(shared_data_file("diginetica-sample.csv"), "diginetica")
    assert (log.n_events, len(log.session_ids), len(log.item_ids)) == (12_391, 2_986, 7_139)
    assert stats.rows_skipped == 0
    first = datetime.fromtimestamp(int(log.ts.min()) / 1000, UTC).date().isoformat()
    last = datetime.fromtimestamp(int(log.ts.max()) / 1000, UTC).date().isoformat()
    assert (first, last) == ("2016-01-03", "2016-06-01")


def test_movielens_100k_reads_as_a_log_of_people() -> None:
    log, stats = read_log(shared_data_file("movielens-100k.csv"), "csv")
    assert (log.n_events, len(log.item_ids)) == (100_000, 1_682)
    assert stats.sessions_from_users == len(log.session_ids)
    assert len({key.split("#")[0] for key in log.session_ids}) == 943
    assert math.isnan(float(log.price[0]))
    assert min(log.ts.tolist()) == 874_724_710_000
