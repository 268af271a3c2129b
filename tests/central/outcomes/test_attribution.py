from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from central.outcomes.attribution import Arm, AttributionSettings, attribute
from central.outcomes.errors import OutcomesError
from protocol.answers import ServedAnswer, served_event
from protocol.events import Event
from tests.central.outcomes.lakes import write_lake

T0 = 1_760_000_000_000
MINUTE = 60_000
_ids = itertools.count()


def _event(session: str, kind: str, minute: float, **fields: object) -> Event:
    return Event(f"evt{next(_ids):06d}", session, kind, int(T0 + minute * MINUTE), **fields)  # type: ignore[arg-type]


def _served(
    session: str, request: str, items: list[str], minute: float, variant: str, bundle: int
) -> Event:
    answer = ServedAnswer(
        request_id=request, session_id=session, ts=int(T0 + minute * MINUTE),
        items=tuple(items), propensities=(1.0,) * len(items), variant=variant,  # type: ignore[arg-type]
        bundle=bundle, policy="none",
    )  # fmt: skip
    return dataclasses.replace(served_event(answer, f"evt{next(_ids):06d}"), region="eu")


def test_clicks_and_purchases_go_to_the_answers_that_led_to_them(tmp_path: Path) -> None:
    purchase_b = _event("s1", "purchase", 5, item_id="b", price=10.0)
    events = [
        _served("s1", "r1", ["a", "b", "c"], 0, "stable", 7),
        _event("s1", "click", 1, item_id="b", request_id="r1"),
        purchase_b,
        purchase_b,  # delivered twice: counted once
        _served("s2", "r2", ["a", "d"], 0, "canary", 8),
        _event("s2", "click", -10, item_id="a", request_id="r2"),  # before it was served
        _event("s2", "click", 1, item_id="e", request_id="r2"),  # never shown
        _event("s2", "purchase", 30, item_id="d", price=5.0),  # view-through
        _event("s2", "purchase", 31, item_id="x"),  # no value
        _event("s2", "purchase", 32, item_id="x", price=3.0, context={"currency": "USD"}),
        _event("s2", "purchase", 33, item_id="x", price=3.0, context={"currency": "usd"}),
        _served("s3", "r3", ["a"], 0, "holdout", 0),
        _event("s3", "click", 1, item_id="a", request_id="nope"),
        _event("s3", "click", 2, item_id="a", request_id="r1"),  # another session's answer
        _event("s3", "purchase", 200, item_id="a", price=4.0),  # outside the window
        _served("s4", "r4", ["a"], 0, "stable", 7),
        _served("s4", "r5", ["a"], 1, "canary", 8),
        _event("s5", "purchase", 1, item_id="a", price=100.0),  # never answered: no arm
    ]
    layout = write_lake(tmp_path / "lake", events)
    result = attribute(layout.data_files())
    arms = {figures.arm: figures for figures in result.arms}
    assert set(arms) == {Arm("eu", 7, "stable"), Arm("eu", 8, "canary"), Arm("eu", 0, "holdout")}
    stable = arms[Arm("eu", 7, "stable")]
    assert stable.ctr.n == 2  # s1 and s4 (s4's first answer was stable)
    assert (stable.ctr.sum_x, stable.ctr.sum_y) == (5.0, 1.0)
    assert stable.conversion.sum_y == 1.0
    assert stable.revenue.sum_y == 10.0
    assert stable.attributed_revenue == 10.0
    canary = arms[Arm("eu", 8, "canary")]
    assert (canary.ctr.n, canary.ctr.sum_y) == (1, 0.0)
    assert canary.revenue.sum_y == 5.0
    assert canary.conversion.sum_y == 1.0
    assert canary.attributed_revenue == 5.0
    holdout = arms[Arm("eu", 0, "holdout")]
    assert holdout.revenue.sum_y == 4.0  # bought in the session, though not attributed
    assert holdout.attributed_revenue == 0.0
    assert result.anomalies == {
        "unknown_request": 1,
        "foreign_session": 1,
        "item_not_shown": 1,
        "clock_skew": 1,
        "purchase_without_value": 1,
        "other_currency": 1,
        "unknown_currency": 1,
        "mixed_arms": 1,
    }
    assert result.answers == 5
    assert result.events == len(events) - 1


def test_an_empty_lake_has_no_arms() -> None:
    result = attribute([])
    assert result.arms == () and result.answers == 0
    assert set(result.anomalies.values()) == {0}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"purchase_window_s": 0}, "purchase_window_s"), ({"skew_tolerance_s": -1},
     "skew_tolerance_s"), ({"currency": "euro"}, "currency")],
)  # fmt: skip
def test_settings_out_of_range_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(OutcomesError) as caught:
        AttributionSettings(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
