from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import get_args

import msgpack
import pytest

from edge_node.config import EdgeSettings
from edge_node.uplink import (
    FsyncPolicy,
    Record,
    RecordTooLargeError,
    Spool,
    SpoolIOError,
    Uplink,
    UplinkConfig,
    UplinkOverloadedError,
    UplinkUnavailableError,
)
from edge_node.uplink.spool import MAX_RECORD_BYTES, frames_size
from runtime.service import ServiceStateError
from tests.support import eventually

REPO_ROOT = Path(__file__).resolve().parents[3]
POLICIES: tuple[FsyncPolicy, ...] = get_args(FsyncPolicy)


def payloads(count: int, tag: str = "event") -> list[bytes]:
    return [f"{tag}-{n}".encode() for n in range(count)]


def read_all(spool: Spool) -> list[Record]:
    records: list[Record] = []
    while batch := spool.read():
        records.extend(batch)
    return records


def reopen_and_read(directory: Path) -> list[bytes]:
    with Spool(directory) as spool:
        return [record.payload for record in read_all(spool)]


class BlockedFsync:
    """Holds every spool fsync until released, so a test can pile submits up behind one."""

    def __init__(self, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        real_fsync = spool.fsync

        def blocked_fsync() -> None:
            self.entered.set()
            self.release.wait()
            real_fsync()

        monkeypatch.setattr(spool, "fsync", blocked_fsync)

    async def wait_until_entered(self) -> None:
        await asyncio.to_thread(self.entered.wait)


async def test_concurrent_submits_share_writes_and_keep_their_order(tmp_path: Path) -> None:
    batches = [payloads(5, f"submit{n}") for n in range(200)]
    async with Uplink(UplinkConfig(tmp_path, fsync="always")) as uplink:
        await asyncio.gather(*(uplink.submit(batch) for batch in batches))
        assert uplink.counters.events_submitted == 1000
        assert uplink.counters.bytes_submitted == sum(len(p) for b in batches for p in b)
        assert 1 <= uplink.counters.fsyncs < len(batches)
        stored = [record.payload for record in read_all(uplink.spool)]
    assert sorted(stored) == sorted(p for batch in batches for p in batch)
    for batch in batches:
        start = stored.index(batch[0])
        assert stored[start : start + len(batch)] == batch


@pytest.mark.parametrize("policy", POLICIES)
async def test_clean_close_keeps_every_submitted_event(tmp_path: Path, policy: FsyncPolicy) -> None:
    uplink = Uplink(UplinkConfig(tmp_path, fsync=policy, fsync_interval_s=10.0))
    await uplink.start()
    for n in range(20):
        await uplink.submit(payloads(3, f"batch{n}"))
    await uplink.close()
    await uplink.close()
    assert uplink.counters.fsyncs >= 1
    assert reopen_and_read(tmp_path) == [p for n in range(20) for p in payloads(3, f"batch{n}")]


async def test_queue_full_raises_overloaded_with_a_retry_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = UplinkConfig(tmp_path, fsync="always", max_pending_events=10)
    async with Uplink(config) as uplink:
        blocked = BlockedFsync(uplink.spool, monkeypatch)
        try:
            first = asyncio.create_task(uplink.submit(payloads(4, "first")))
            await blocked.wait_until_entered()
            second = asyncio.create_task(uplink.submit(payloads(4, "second")))
            while uplink.waiting_events < 8:
                await asyncio.sleep(0)
            with pytest.raises(UplinkOverloadedError) as raised:
                await uplink.submit(payloads(3, "third"))
            assert raised.value.retry_after_s == config.overloaded_retry_after_s
            assert uplink.counters.overload_rejections == 1
        finally:
            blocked.release.set()
        await asyncio.gather(first, second)
        assert uplink.waiting_events == 0
        await uplink.submit(payloads(3, "third"))
    assert reopen_and_read(tmp_path) == [
        *payloads(4, "first"), *payloads(4, "second"), *payloads(3, "third")
    ]


@pytest.mark.parametrize("policy", POLICIES)
async def test_full_spool_raises_overloaded(tmp_path: Path, policy: FsyncPolicy) -> None:
    config = UplinkConfig(tmp_path, fsync=policy, max_bytes=frames_size(payloads(5)))
    async with Uplink(config) as uplink:
        await uplink.submit(payloads(5))
        with pytest.raises(UplinkOverloadedError) as raised:
            await uplink.submit(payloads(1, "more"))
        assert raised.value.retry_after_s == config.spool_full_retry_after_s
        assert uplink.counters.overload_rejections == 1
        assert uplink.counters.events_submitted == 5


async def test_close_timeout_fails_queued_submits_and_finishes_the_write_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uplink = Uplink(UplinkConfig(tmp_path, fsync="always"))
    await uplink.start()
    blocked = BlockedFsync(uplink.spool, monkeypatch)
    try:
        writing = asyncio.create_task(uplink.submit(payloads(2, "writing")))
        await blocked.wait_until_entered()
        queued = asyncio.create_task(uplink.submit(payloads(2, "queued")))
        while uplink.waiting_events < 4:
            await asyncio.sleep(0)
        closing = asyncio.create_task(uplink.close(timeout_s=0.01))
        with pytest.raises(UplinkUnavailableError):
            await queued
        with pytest.raises(UplinkUnavailableError):
            await uplink.submit(payloads(1, "late"))
    finally:
        blocked.release.set()
    await writing
    await closing
    assert reopen_and_read(tmp_path) == payloads(2, "writing")


async def test_a_failed_fsync_fails_its_submits_and_refuses_more_until_a_full_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = UplinkConfig(tmp_path, fsync="always", recover_every_s=0.05)
    async with Uplink(config) as uplink:
        real_fsync = uplink.spool.fsync

        def failing_fsync() -> None:
            monkeypatch.setattr(uplink.spool, "fsync", real_fsync)
            raise SpoolIOError("fsync of the spool failed: Input/output error")

        monkeypatch.setattr(uplink.spool, "fsync", failing_fsync)
        with pytest.raises(UplinkUnavailableError, match="cannot write to its disk"):
            await uplink.submit(payloads(2, "unlucky"))
        assert uplink.counters.io_errors == 1
        assert uplink.fault is not None
        await eventually(lambda: uplink.fault is None, "a full fsync succeeded")
        await uplink.submit(payloads(2, "lucky"))
    # Not acknowledged does not mean absent: the client sends "unlucky" again, the bus dedupes.
    assert reopen_and_read(tmp_path) == [*payloads(2, "unlucky"), *payloads(2, "lucky")]


async def test_submit_outside_start_and_close_is_refused(tmp_path: Path) -> None:
    uplink = Uplink(UplinkConfig(tmp_path))
    with pytest.raises(UplinkUnavailableError):
        await uplink.submit(payloads(1))
    with pytest.raises(UplinkUnavailableError):
        _ = uplink.spool
    await uplink.start()
    await uplink.submit([])
    with pytest.raises(RecordTooLargeError):
        await uplink.submit([b"x" * (MAX_RECORD_BYTES + 1)])
    await uplink.close()
    with pytest.raises(UplinkUnavailableError, match="closed"):
        await uplink.submit(payloads(1))
    with pytest.raises(ServiceStateError):
        await uplink.start()


@pytest.mark.parametrize("policy", POLICIES)
async def test_wait_for_records_wakes_on_append_and_on_close(
    tmp_path: Path, policy: FsyncPolicy
) -> None:
    async with Uplink(UplinkConfig(tmp_path, fsync=policy)) as uplink:
        waiter = asyncio.create_task(uplink.wait_for_records())
        await asyncio.sleep(0)
        assert not waiter.done()
        await uplink.submit(payloads(2))
        assert await waiter is True
        assert [record.seq for record in uplink.spool.read()] == [1, 2]
        waiter = asyncio.create_task(uplink.wait_for_records())
        await asyncio.sleep(0)
        assert not waiter.done()
    assert await waiter is False


def test_from_settings_takes_the_spool_settings(tmp_path: Path) -> None:
    settings = EdgeSettings(
        region="eu", node="n1", public_key=tmp_path / "key.pub", spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 20, spool_fsync="never", spool_fsync_interval_s=0.5,
        uplink_max_pending_events=77,
    )
    config = Uplink.from_settings(settings).config
    assert config == UplinkConfig(
        tmp_path / "spool", fsync="never", fsync_interval_s=0.5, max_pending_events=77,
        max_bytes=1 << 20,
    )


CHILD = """
import asyncio, sys
from pathlib import Path
from edge_node.uplink import Uplink, UplinkConfig
from protocol.codec import encode_msgpack
from protocol.events import Event

async def main() -> None:
    config = UplinkConfig(
        Path(sys.argv[1]), fsync=sys.argv[2], fsync_interval_s=0.01, segment_bytes=16 * 1024
    )
    async with Uplink(config) as uplink:
        n = 0
        while True:
            await uplink.submit([
                encode_msgpack(Event(
                    event_id=f"submit-{n:06d}-{i}", session_id=f"s{n % 7}", type="view",
                    item_id=f"item-{n % 101}", ts=1_700_000_000_000 + n,
                ))
                for i in range(3)
            ])
            print(f"ACKED {n}", flush=True)
            n += 1

asyncio.run(main())
"""


@pytest.mark.parametrize("policy", POLICIES)
def test_every_acknowledged_event_survives_sigkill(tmp_path: Path, policy: FsyncPolicy) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), policy],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    acked: list[int] = []
    try:
        while len(acked) < 400:
            line = child.stdout.readline()
            assert line, f"the child stopped: {child.stderr.read()}"
            acked.append(int(line.split()[1]))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    acked += [int(line.split()[1]) for line in child.stdout.read().splitlines()]
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert acked == list(range(len(acked)))

    ids = [msgpack.unpackb(payload)["event_id"] for payload in reopen_and_read(tmp_path)]
    expected = [f"submit-{n:06d}-{i}" for n in acked for i in range(3)]
    # Acknowledged events are all there, once and in order; after them at most the one submit
    # that was under way when the process died.
    assert ids[: len(expected)] == expected
    assert len(ids) - len(expected) in (0, 3)
