"""Off-policy evaluation of two real bundles on answers logged in a lake, and its gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from central.cli import main
from central.outcomes.errors import OutcomesError
from central.outcomes.logged import LoggedLog, read_logged
from central.outcomes.offpolicy import GateSettings, evaluate_models
from tests.central.outcomes.world import Trained, logged_lake


def test_the_better_bundle_is_estimated_better_and_passes_the_gate(
    trained: Trained, tmp_path: Path
) -> None:
    lake = logged_lake(tmp_path / "lake", trained.models["good"], 250)
    log: LoggedLog = read_logged(sorted(lake.rglob("*.parquet")))
    good, bad = trained.models["good"], trained.models["bad"]
    result = evaluate_models(log, good, bad, GateSettings(estimator="dr"))
    assert result.passed is True
    assert result.difference["dr"].low > 0
    for name in ("ips", "snips", "dr"):
        assert result.candidate[name].estimate > result.baseline[name].estimate, name
    reverse = evaluate_models(log, bad, good, GateSettings(estimator="dr"))
    assert reverse.passed is False
    # A margin larger than the gap lets the worse one through, as asked.
    lenient = evaluate_models(log, bad, good, GateSettings(estimator="dr", margin=100.0))
    assert lenient.passed is True


def test_evaluate_logged_command(trained: Trained, tmp_path: Path) -> None:
    lake = logged_lake(tmp_path / "lake", trained.models["good"], 60)
    runner = CliRunner()
    args = ["evaluate", "--logged", str(lake), "--bundle", str(trained.paths["bad"]),
            "--baseline-bundle", str(trained.paths["good"]), "--public-key",
            str(trained.public_key)]  # fmt: skip
    result = runner.invoke(main, [*args, "--json"])
    assert result.exit_code == 1, result.output  # the gate fails: exit status 1
    body = json.loads(result.output.splitlines()[0])
    assert body["candidate_version"] == 2 and body["baseline_version"] == 1
    assert body["gate"]["passed"] is False
    assert set(body["candidate"]) == {"ips", "snips", "dr"}
    table = runner.invoke(main, [*args[:-4], "--public-key", str(trained.public_key)])
    assert table.exit_code == 0, table.output
    assert "off-policy estimates" in table.output
    missing = runner.invoke(main, ["evaluate", "--logged", str(tmp_path / "nowhere"),
                                   "--bundle", str(trained.paths["bad"]), "--public-key",
                                   str(trained.public_key)])  # fmt: skip
    assert missing.exit_code == 1 and "nowhere" in missing.output


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(OutcomesError, match="estimator"):
        GateSettings(estimator="magic")  # type: ignore[arg-type]
    with pytest.raises(OutcomesError, match="margin"):
        GateSettings(margin=-1)
