from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from central.outcomes.service import OutcomesCollector, OutcomesService, OutcomesSettings
from tests.central.outcomes.lakes import write_lake
from tests.central.outcomes.test_report import _shop
from tests.support import eventually


async def test_the_service_attributes_the_lake_and_exports_it(tmp_path: Path) -> None:
    service = OutcomesService(OutcomesSettings(tmp_path / "lake", interval_s=0.2))
    registry = CollectorRegistry()
    registry.register(OutcomesCollector(service))
    await service.start()
    try:
        assert service.compute() is None  # no lake yet: nothing to say, no error
        write_lake(tmp_path / "lake", _shop(900, seed=2))
        await eventually(lambda: service.report is not None, "the lake attributed")
    finally:
        await service.close()
    text = generate_latest(registry).decode()
    assert 'proxima_outcome_sessions{bundle="7",region="eu",variant="stable"} 300.0' in text
    assert 'metric="conversion"' in text and 'against="holdout"' in text
    assert 'bound="low"' in text
    assert "proxima_outcome_computed_at" in text


def test_an_idle_service_exports_empty_families() -> None:
    service = OutcomesService(OutcomesSettings(Path("/nonexistent-lake")))
    registry = CollectorRegistry()
    registry.register(OutcomesCollector(service))
    text = generate_latest(registry).decode()
    assert "proxima_outcome_sessions{" not in text
