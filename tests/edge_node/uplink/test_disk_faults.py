"""A full disk and a failed fsync: logged once, counted, events refused until a full fsync.

The full disk is a real one: a 256 KiB tmpfs mounted for the test (skipped where mounting is
not permitted). The failed fsync is the kernel's own answer too: fdatasync on a pipe put in
place of the segment's descriptor fails with EINVAL, as it would with EIO on a dying disk.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge_node.uplink import Uplink, UplinkConfig, UplinkUnavailableError
from edge_node.uplink.errors import SpoolIOError
from edge_node.uplink.spool import Spool
from tests.edge_node.conftest import EdgeFactory
from tests.edge_node.test_events_route import JSON, view
from tests.edge_node.test_status_routes import samples
from tests.support import eventually

EVENT = b"e" * 1000


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_a_full_disk_is_logged_once_refuses_events_and_heals_after_a_full_fsync(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (64 << 10))
    config = UplinkConfig(
        tiny_disk / "spool", fsync="interval", fsync_interval_s=0.02, recover_every_s=0.05
    )
    caplog.set_level(logging.WARNING, "proxima")
    async with Uplink(config) as uplink:
        accepted = 0
        with pytest.raises(UplinkUnavailableError) as refused:
            for _ in range(1000):
                await uplink.submit([EVENT] * 8)
                accepted += 8
        assert refused.value.status == 503
        assert "disk" in refused.value.message and str(tiny_disk) not in refused.value.message
        assert accepted > 0
        assert uplink.fault is not None and uplink.counters.io_errors >= 1
        for _ in range(5):  # refused at once while the fault lasts, and not logged again
            with pytest.raises(UplinkUnavailableError):
                await uplink.submit([EVENT])
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert "errno 28 ENOSPC" in errors[0] and str(tiny_disk / "spool") in errors[0]

        filler.unlink()  # the operator frees space
        await eventually(lambda: uplink.fault is None, "a full fsync succeeded")
        await uplink.submit([EVENT])
        assert "writes again" in caplog.text
        assert uplink.spool.pending_records == accepted + 1


def test_a_failed_fsync_makes_the_segment_suspect_until_a_fresh_one_is_synced(
    tmp_path: Path,
) -> None:
    with Spool(tmp_path / "spool") as spool:
        spool.append([b"synced"])
        spool.fsync()
        spool.append([b"maybe-lost-1", b"maybe-lost-2"])
        read_end, write_end = os.pipe()
        os.dup2(write_end, spool._fd)  # the kernel refuses to fsync what is there now
        try:
            with pytest.raises(SpoolIOError) as failed:
                spool.fsync()
            assert failed.value.errno is not None
            assert spool.suspect_from_seq == 2
            with pytest.raises(SpoolIOError, match="suspect"):
                spool.fsync()  # not tried again as if nothing happened
            with pytest.raises(SpoolIOError, match="suspect"):
                spool.append([b"refused"])
            assert spool.resync() == (2, 3)
        finally:
            os.close(read_end)
            os.close(write_end)
        assert spool.suspect_from_seq is None
        spool.append([b"after"])
        spool.fsync()
        assert spool.last_seq == 4


async def test_an_edge_on_a_full_disk_answers_503_is_not_ready_and_exports_it(
    tiny_disk: Path, edge_factory: EdgeFactory
) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (64 << 10))
    edge = edge_factory(
        spool_dir=tiny_disk / "spool",
        spool_fsync="interval",
        session_rate=1_000_000,
        session_burst=1_000_000,
        ip_rate=1_000_000,
        ip_burst=1_000_000,
    )
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{edge.url}/readyz")).status_code == 200
        for n in range(2_000):
            batch = [view(f"disk-{n}", query="q" * 200) for _ in range(20)]
            answer = await client.post(
                f"{edge.url}/v1/events", content=json.dumps(batch), headers=JSON
            )
            if answer.status_code != 202:
                break
        assert answer.status_code == 503, answer.text
        assert str(tiny_disk) not in answer.text  # the path is in the log, not the answer
        ready = await client.get(f"{edge.url}/readyz")
        assert ready.status_code == 503 and "disk" in ready.text
        metrics = (await client.get(f"{edge.url}/metrics")).text
        assert samples(metrics, "proxima_edge_spool_fault") == [({}, 1.0)]
        assert samples(metrics, "proxima_edge_spool_io_errors")[0][1] >= 1

        filler.unlink()

        async def ready_again() -> bool:
            return (await client.get(f"{edge.url}/readyz")).status_code == 200

        await eventually(ready_again, "the edge is ready again after a full fsync")
        answer = await client.post(
            f"{edge.url}/v1/events", content=json.dumps([view("disk-after")]), headers=JSON
        )
        assert answer.status_code == 202, answer.text
