"""Holdout, exploration and the served-answer log on a real edge."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from edge_node.answer_policy import AnswerPolicy, holdout_bucket
from edge_node.uplink import Spool
from protocol.answers import is_served, read_served
from protocol.codec import decode_msgpack_event
from protocol.events import Event
from tests.edge_node.conftest import EdgeFactory
from tests.edge_node.test_recommendations_route import post_events, recommend, unique_session, view
from tests.support import eventually


def _served_in_spool(edge_spool: Path) -> list[Event]:
    records: list[Event] = []
    with Spool(edge_spool) as spool:
        while batch := spool.read():
            records.extend(decode_msgpack_event(record.payload) for record in batch)
    return [event for event in records if is_served(event)]


def test_the_holdout_share_follows_its_percent_and_is_stable() -> None:
    policy = AnswerPolicy(holdout_percent=10)
    sessions = [f"s{n}" for n in range(20_000)]
    share = sum(policy.in_holdout(s) for s in sessions) / len(sessions)
    assert share == pytest.approx(0.10, abs=0.01)
    assert all(policy.in_holdout(s) == policy.in_holdout(s) for s in sessions[:100])
    assert not AnswerPolicy().in_holdout("anything")
    assert 0 <= holdout_bucket("x") < 10_000


async def test_answers_carry_positions_propensities_and_are_logged(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(
        holdout_percent=50, explore_rate=0.5, explore_slots=3, explore_pool=10, shadow_sample=0.0
    )
    popular = (await recommend(client, edge, session_id=unique_session("cold"), k=20)).json()
    seen_item = popular["items"][0]["item_id"]
    variants: dict[str, int] = {}
    explored = 0
    for n in range(40):
        session = unique_session(f"p{n}")
        await post_events(client, edge, [view(session, seen_item)])
        answer = (await recommend(client, edge, session_id=session, k=10)).json()
        variants[answer["variant"]] = variants.get(answer["variant"], 0) + 1
        assert [item["position"] for item in answer["items"]] == list(range(len(answer["items"])))
        propensities = [item["propensity"] for item in answer["items"]]
        assert propensities[:7] == [1.0] * 7
        explored += sum(p < 0.5 for p in propensities)
        if answer["variant"] == "holdout":
            assert answer["request_id"].startswith("h1.")
    assert set(variants) == {"holdout", "stable"}
    assert explored > 0
    state = edge.app.state.edge
    answers = state.recommender.answer_log
    await eventually(lambda: answers.pending == 0, "served records handed to the uplink")
    assert answers.recorded == 41 and answers.dropped == 0
    metrics = (await client.get(f"{edge.url}/metrics")).text
    assert "proxima_edge_answer_records_total 41.0" in metrics
    edge.stop()
    served = [read_served(event) for event in _served_in_spool(edge.settings.spool_dir)]
    assert len(served) == 41
    assert {answer.variant for answer in served} == {"holdout", "stable"}
    assert all(answer.bundle == 0 for answer in served if answer.variant == "holdout")
    assert any(min(answer.propensities) < 0.5 for answer in served)
    assert all(answer.policy == "tail-r0.5-s3-p10" for answer in served)
