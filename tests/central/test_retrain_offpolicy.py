"""The trainer's off-policy gate: a retrained bundle the logged answers judge worse than the
stable one is not published, whatever its offline replay said."""

from __future__ import annotations

from pathlib import Path

from central.outcomes.offpolicy import GateSettings
from central.trainer.gate import GateResult, Score
from central.trainer.retrain import OffPolicyCheck, offpolicy_verdict
from tests.central.outcomes.world import Trained, logged_lake

PASSED = GateResult(True, "candidate within the allowed loss", Score(0.5, 0.2), 1,
                    Score(0.5, 0.2), 100, 400, False)  # fmt: skip


def test_the_logged_answers_overrule_a_passing_offline_gate(
    trained: Trained, tmp_path: Path
) -> None:
    lake = logged_lake(tmp_path / "lake", trained.models["good"], 150)
    check = OffPolicyCheck(lake, GateSettings(estimator="dr"))
    worse = offpolicy_verdict(PASSED, check, trained.models["bad"], trained.models["good"])
    assert worse.passed is False
    assert "worse than stable 1" in worse.reason and "logged answers" in worse.reason
    better = offpolicy_verdict(PASSED, check, trained.models["good"], trained.models["bad"])
    assert better.passed is True
    assert better.reason.startswith("candidate within the allowed loss; off-policy dr +")


def test_without_logged_answers_the_gate_refuses_and_says_why(
    trained: Trained, tmp_path: Path
) -> None:
    check = OffPolicyCheck(tmp_path / "no-lake")
    verdict = offpolicy_verdict(PASSED, check, trained.models["good"], trained.models["bad"])
    assert verdict.passed is False
    assert verdict.reason.startswith("off-policy gate not judged:")
    assert "no-lake" in verdict.reason
