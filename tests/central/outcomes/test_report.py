from __future__ import annotations

import dataclasses
import itertools
import json
import random
from pathlib import Path

from click.testing import CliRunner

from central.cli import main
from central.outcomes.attribution import attribute
from central.outcomes.report import build_report
from protocol.answers import ServedAnswer, served_event
from protocol.events import Event
from tests.central.outcomes.lakes import write_lake

T0 = 1_760_000_000_000
_ids = itertools.count()


def _shop(sessions: int, seed: int) -> list[Event]:
    """Sessions split over holdout, stable and canary arms that convert 4 %, 6 % and 7 %."""
    rng = random.Random(seed)
    arms = [("holdout", 0, 0.04), ("stable", 7, 0.06), ("canary", 8, 0.07)]
    events = []
    for index in range(sessions):
        variant, bundle, rate = arms[index % 3]
        session = f"s{index}"
        start = T0 + index * 1000
        answer = ServedAnswer(f"r{index}", session, start, ("a", "b", "c"), (1.0, 1.0, 1.0),
                              variant, bundle, "none")  # type: ignore[arg-type]  # fmt: skip
        events.append(
            dataclasses.replace(served_event(answer, f"evt{next(_ids):07d}"), region="eu")
        )
        if rng.random() < rate:
            events.append(Event(f"evt{next(_ids):07d}", session, "click", start + 10,
                                item_id="b", request_id=f"r{index}"))  # fmt: skip
            events.append(Event(f"evt{next(_ids):07d}", session, "purchase", start + 20,
                                item_id="b", price=20.0))  # fmt: skip
    return events


def test_lift_over_the_holdout_covers_the_true_one(tmp_path: Path) -> None:
    layout = write_lake(tmp_path / "lake", _shop(60_000, seed=4))
    report = build_report(attribute(layout.data_files()))
    arms = {arm.variant: arm for arm in report.arms}
    assert set(arms) == {"holdout", "stable", "canary"}
    assert arms["stable"].lift_vs_holdout["conversion"].covers(0.5)
    assert arms["stable"].lift_vs_holdout["conversion"].low > 0
    assert arms["canary"].lift_vs_holdout["revenue"].covers(0.75)
    assert arms["canary"].lift_vs_stable["conversion"].covers(7 / 6 - 1)
    assert arms["canary"].stable_bundle == 7
    assert "conversion" not in arms["holdout"].lift_vs_holdout
    assert arms["stable"].figures["ctr"].covers(0.06 / 3)
    sequential = build_report(attribute(layout.data_files()), sequential=True)
    wide = {arm.variant: arm for arm in sequential.arms}["stable"].lift_vs_holdout["conversion"]
    narrow = arms["stable"].lift_vs_holdout["conversion"]
    assert wide.low < narrow.low and wide.high > narrow.high


def test_report_command_prints_json_and_filters(tmp_path: Path) -> None:
    write_lake(tmp_path / "lake", _shop(3000, seed=1))
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--lake", str(tmp_path / "lake"), "--json",
                                  "--version", "8"])  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert [arm["bundle"] for arm in body["arms"]] == [8]
    assert body["answers"] == 3000
    assert set(body["arms"][0]["lift_vs_holdout"]) == {"ctr", "conversion", "revenue"}
    text = runner.invoke(main, ["report", "--lake", str(tmp_path / "lake")])
    assert text.exit_code == 0, text.output
    assert "canary" in text.output and "holdout" in text.output


def test_report_command_names_a_missing_lake_and_a_bad_currency(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["report", "--lake", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert "nowhere" in missing.output and "Traceback" not in missing.output
    bad = runner.invoke(main, ["report", "--lake", str(tmp_path), "--currency", "euro"])
    assert bad.exit_code == 2
    assert "--currency" in bad.output
