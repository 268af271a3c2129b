from __future__ import annotations

from prometheus_client import generate_latest

from central.bridge import BridgeStatus
from central.lake.writer import LakeWriterStatus
from central.metrics import central_registry
from central.trainer.service import TrainerStatus


def test_each_role_is_read_when_scraped() -> None:
    bridge = BridgeStatus(
        forwarded=10, dead_lettered=1, acked=11, errors=0, lag=None, last_error=None, running=True
    )
    trainer = TrainerStatus(consumed=5, attempts=2, published=[3])
    lake = LakeWriterStatus(consumed=9, written=8, invalid=1)
    registry = central_registry(bridge=lambda: bridge, trainer=lambda: trainer, lake=lambda: lake)
    text = generate_latest(registry).decode()
    assert "proxima_bridge_forwarded_total 10.0" in text
    assert "proxima_bridge_running 1.0" in text
    assert "proxima_bridge_lag" not in text  # unknown until the first check
    assert "proxima_trainer_published_total 1.0" in text
    assert "proxima_lake_written_total 8.0" in text
    lake.written = 20  # read again at the next scrape, not copied
    assert "proxima_lake_written_total 20.0" in generate_latest(registry).decode()


def test_only_the_roles_that_run_are_exported() -> None:
    text = generate_latest(central_registry(trainer=lambda: TrainerStatus())).decode()
    assert "proxima_trainer_consumed_total 0.0" in text
    assert "proxima_bridge" not in text and "proxima_lake" not in text
