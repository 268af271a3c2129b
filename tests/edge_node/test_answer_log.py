from __future__ import annotations

from pathlib import Path

from edge_node.answer_log import AnswerLog
from edge_node.uplink import Spool, Uplink, UplinkConfig
from protocol.answers import ServedAnswer, is_served, read_served
from protocol.codec import decode_msgpack_event
from tests.support import eventually


def _answer(n: int) -> ServedAnswer:
    return ServedAnswer(
        f"req{n}", f"s{n % 7}", 1_760_000_000_000 + n, ("a", "b", "c"), (1.0, 0.75, 0.05),
        "canary", 4, "tail",
    )  # fmt: skip


def _spooled(directory: Path) -> list[bytes]:
    with Spool(directory) as spool:
        records: list[bytes] = []
        while batch := spool.read():
            records.extend(record.payload for record in batch)
        return records


async def test_every_answer_reaches_the_spool_as_a_served_record(tmp_path: Path) -> None:
    uplink = Uplink(UplinkConfig(tmp_path, fsync="always"))
    await uplink.start()
    answers = AnswerLog(uplink, region="eu", node="edge-1", batch=16)
    await answers.start()
    for n in range(100):
        answers.record(_answer(n))
    # The flush loop hands them over without being asked.
    await eventually(lambda: answers.submitted == 100, "all records submitted")
    await answers.close()
    await uplink.close()
    events = [decode_msgpack_event(payload) for payload in _spooled(tmp_path)]
    assert len(events) == 100
    assert all(is_served(event) and event.region == "eu" for event in events)
    served = [read_served(event) for event in events]
    assert {answer.request_id for answer in served} == {f"req{n}" for n in range(100)}
    assert served[0].propensities == (1.0, 0.75, 0.05)
    assert served[0].variant == "canary" and served[0].bundle == 4
    assert len({event.event_id for event in events}) == 100


async def test_a_full_buffer_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    uplink = Uplink(UplinkConfig(tmp_path, fsync="never"))
    await uplink.start()
    answers = AnswerLog(uplink, region="eu", node="edge-1", max_pending=5)
    for n in range(8):
        answers.record(_answer(n))
    assert (answers.pending, answers.dropped, answers.recorded) == (5, 3, 5)
    await answers.start()
    await answers.close()  # drains what it holds on close
    await uplink.close()
    assert answers.pending == 0
    assert len(_spooled(tmp_path)) == 5
