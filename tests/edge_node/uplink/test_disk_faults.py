"""A full disk and a failed fsync: logged once, counted, events refused until a full fsync.

The full disk is a real one: a 256 KiB tmpfs mounted for the test (skipped where mounting is
not permitted). The failed fsync is the kernel's own answer too: fdatasync on a pipe put in
place of the segment's descriptor fails with EINVAL, as it would with EIO on a dying disk.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node.uplink import Uplink, UplinkConfig, UplinkUnavailableError
from edge_node.uplink.errors import SpoolIOError
from edge_node.uplink.spool import Spool
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
