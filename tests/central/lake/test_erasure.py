"""A user erased at an edge is erased from the lake: their rows and their sessions' rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from nats.js.client import JetStreamContext

from central.lake.erasure import LakeEraser, erase_users, erasures_kv
from central.lake.layout import open_lake
from central.lake.tables import source_of
from devtools.localservers import NatsServer
from edge_node.users import erasure_key
from protocol.events import Event
from runtime.nats import NatsSettings
from tests.central.outcomes.lakes import write_lake
from tests.support import eventually

T0 = 1_770_000_000_000


def _shop() -> list[Event]:
    events = []
    for n in range(60):
        user = f"user{n % 6}"
        session = f"s{n}"
        ts = T0 + n * 3_600_000  # a few days, so several files
        events.append(Event(f"evt{n:05d}a", session, "view", ts, item_id=f"i{n % 9}"))  # anonymous
        events.append(Event(f"evt{n:05d}b", session, "view", ts + 1, item_id="i1", user_id=user))
    return events


def _rows(root: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in open_lake(root).data_files():
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def test_the_user_and_their_sessions_leave_every_file(tmp_path: Path) -> None:
    layout = write_lake(tmp_path / "lake", _shop())
    names_before = [path.name for path in layout.data_files()]
    sources_before = [source_of(path) for path in layout.data_files()]
    erased = erase_users(layout, {"user2"})
    assert erased.rows == 20 and erased.sessions == 10  # 10 sessions, each 2 rows
    rows = _rows(tmp_path / "lake")
    assert len(rows) == 100
    assert not any(row["user_id"] == "user2" for row in rows)
    gone = {f"s{n}" for n in range(60) if n % 6 == 2}
    assert not any(row["session_id"] in gone for row in rows)  # the anonymous rows too
    # Same files, same offset ranges: writers resume where they did.
    assert [path.name for path in layout.data_files()] == names_before
    assert [source_of(path) for path in layout.data_files()] == sources_before
    assert erase_users(layout, {"user2"}).files == 0  # nothing left to do
    assert not (layout.staging).exists() or not any(layout.staging.iterdir())


async def test_the_eraser_applies_what_edges_recorded(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path
) -> None:
    write_lake(tmp_path / "lake", _shop())
    kv = await erasures_kv(js)  # central makes the bucket
    record = {"user_id": "user4", "erased_at": T0, "region": "eu", "node": "n1"}
    await kv.put(erasure_key("user4"), json.dumps(record).encode())
    eraser = LakeEraser(NatsSettings.from_url(nats_server.url), tmp_path / "lake", interval_s=0.2)
    await eraser.start()
    try:
        await eventually(lambda: eraser.erased_rows == 20, "user4 erased from the lake")
    finally:
        await eraser.close()
    assert not any(row["user_id"] == "user4" for row in _rows(tmp_path / "lake"))
    assert len(_rows(tmp_path / "lake")) == 100
