"""Feedback that cannot be forged: signed request ids, bound to the session, charged per event."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_node.errors import SettingsError
from edge_node.feedback import FeedbackIds, IssuedAnswer, load_feedback_ids
from edge_node.observe import Observer
from protocol.telemetry import TelemetryReport
from tests.edge_node.conftest import EdgeFactory, EdgeServer


def impression(session_id: str, request_id: str, items: tuple[str, ...] = ("i001",)) -> Any:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "impression",
        "items": list(items),
        "request_id": request_id,
        "ts": int(time.time() * 1000),
    }


def click(session_id: str, request_id: str) -> Any:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "click",
        "item_id": "i001",
        "request_id": request_id,
        "ts": int(time.time() * 1000),
    }


def samples(edge: EdgeServer, name: str) -> dict[str, float]:
    """``name``'s samples by their labels (``variant=canary,type=impression``), region and
    node left out, as ``/metrics`` shows them (read in process: no request is charged)."""
    text = generate_latest(edge.app.state.edge.metrics.registry).decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            labels = {k: v for k, v in sample.labels.items() if k not in ("region", "node")}
            found[",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = sample.value
    return found


def test_an_id_verifies_only_for_its_session_and_names_its_answer() -> None:
    ids = FeedbackIds(b"s" * 32)
    request_id = ids.issue("session-a", "canary", 12)
    assert len(request_id) <= 128
    assert all(c.isalnum() or c in "._-" for c in request_id)  # URL-safe as it is
    assert ids.verify(request_id, "session-a") == IssuedAnswer("canary", 12)
    assert ids.verify(request_id, "session-b") == "bad_mac"
    assert FeedbackIds(b"t" * 32).verify(request_id, "session-a") == "bad_mac"
    nonce_and_rest = request_id.split(".")
    as_stable = ".".join([nonce_and_rest[0], nonce_and_rest[1], "s12", nonce_and_rest[3]])
    assert ids.verify(as_stable, "session-a") == "bad_mac"  # the variant is signed too
    for forged in ("x.c", "edge-1-abc-1f.c", "", "r1..c1.", request_id + ".c"):
        assert ids.verify(forged, "session-a") == "malformed"
    assert ids.issue("session-a", "canary", 12) != request_id  # a fresh nonce each time


def test_feedback_counts_for_the_bundle_its_id_names() -> None:
    observer = Observer("eu", "n1")
    observer.feedback("impression", IssuedAnswer("canary", 8))  # no answer yet this interval
    observer.feedback("click", IssuedAnswer("canary", 9))  # an id of an earlier canary
    report = observer.telemetry.take(TelemetryReport("eu", "n1", 1, 1, 0, 0.0))
    canary = report.variants["canary"]
    assert (canary.version, canary.impressions, canary.clicks) == (8, 1, 0)
    text = generate_latest(observer.metrics.registry).decode()
    assert 'reason="other_version",type="click"' in text.replace(" ", "")


def test_the_secret_comes_from_the_setting_or_its_file(tmp_path: Any) -> None:
    secret_file = tmp_path / "feedback.secret"
    secret_file.write_bytes(b"0123456789abcdef0123\n")
    from_file = load_feedback_ids(None, secret_file)
    from_setting = load_feedback_ids("0123456789abcdef0123", None)
    issued = from_file.issue("s", "stable", 3)
    assert from_setting.verify(issued, "s") == IssuedAnswer("stable", 3)  # replicas agree
    assert not from_file.generated
    assert load_feedback_ids(None, None).generated
    with pytest.raises(SettingsError):
        load_feedback_ids("short", None)
    with pytest.raises(SettingsError):
        load_feedback_ids("0123456789abcdef0123", secret_file)
    with pytest.raises(SettingsError):
        load_feedback_ids(None, tmp_path / "missing")


async def test_forged_canary_ids_do_not_move_canary_feedback(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory()
    # The trick of the issue: an id ending in ".c", 500 impressions in one anonymous post.
    forged = [impression(f"forger-{n}", f"edge-1-abc123-{n:x}.c") for n in range(500)]
    response = await client.post(f"{edge.url}/v1/events", json=forged)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 500  # kept as events: nothing is lost
    well_shaped = "r1.AAAAAAAAAAAA.c7.AAAAAAAAAAAAAAAAAAAAAA"
    response = await client.post(f"{edge.url}/v1/events", json=[impression("forger", well_shaped)])
    assert response.json()["accepted"] == 1

    feedback = samples(edge, "proxima_edge_feedback_total")
    assert feedback.get("type=impression,variant=canary", 0) == 0
    assert feedback.get("type=impression,variant=stable", 0) == 0
    rejected = samples(edge, "proxima_edge_feedback_rejected_total")
    assert rejected["reason=malformed,type=impression"] == 500
    assert rejected["reason=bad_mac,type=impression"] == 1


async def test_a_genuine_id_counts_for_its_session_only(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory()
    answer = await client.get(
        f"{edge.url}/v1/recommendations", params={"session_id": "session-a", "k": 3}
    )
    assert answer.status_code == 200
    request_id = answer.json()["request_id"]
    version = answer.json()["model_version"]
    assert edge.app.state.edge.recommender.feedback.verify(
        request_id, "session-a"
    ) == IssuedAnswer("stable", version)

    for session in ("session-b", "session-c"):  # replayed into other sessions
        posted = await client.post(
            f"{edge.url}/v1/events",
            json=[impression(session, request_id), click(session, request_id)],
        )
        assert posted.json()["accepted"] == 2
    rejected = samples(edge, "proxima_edge_feedback_rejected_total")
    assert rejected["reason=bad_mac,type=impression"] == 2
    assert rejected["reason=bad_mac,type=click"] == 2
    feedback = samples(edge, "proxima_edge_feedback_total")
    assert feedback.get("type=impression,variant=stable", 0) == 0

    posted = await client.post(
        f"{edge.url}/v1/events",
        json=[impression("session-a", request_id), click("session-a", request_id)],
    )
    assert posted.json()["accepted"] == 2
    feedback = samples(edge, "proxima_edge_feedback_total")
    assert feedback["type=impression,variant=stable"] == 1
    assert feedback["type=click,variant=stable"] == 1
    assert feedback.get("type=impression,variant=canary", 0) == 0
    telemetry = edge.app.state.edge.recommender.telemetry.variants
    assert (telemetry["stable"].impressions, telemetry["stable"].clicks) == (1, 1)
    assert telemetry["canary"].impressions == 0


async def test_another_replica_counts_feedback_only_with_the_shared_secret(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    secret = "a-region-wide-secret-0123456789"
    first = edge_factory(feedback_secret=secret)
    second = edge_factory(feedback_secret=secret)
    loner = edge_factory()  # a secret of its own
    answer = await client.get(f"{first.url}/v1/recommendations", params={"session_id": "s1"})
    request_id = answer.json()["request_id"]
    for edge in (second, loner):
        posted = await client.post(f"{edge.url}/v1/events", json=[impression("s1", request_id)])
        assert posted.json()["accepted"] == 1
    assert (samples(second, "proxima_edge_feedback_total"))[
        "type=impression,variant=stable"
    ] == 1
    loner_counts = samples(loner, "proxima_edge_feedback_total")
    assert loner_counts.get("type=impression,variant=stable", 0) == 0


def view(session_id: str) -> Any:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": "i001",
        "ts": int(time.time() * 1000),
    }


async def test_the_address_limit_is_charged_per_event_and_a_refused_batch_keeps_nothing(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(ip_rate=0.01, ip_burst=10)
    url = f"{edge.url}/v1/events"
    first = await client.post(url, json=[view(f"s{n}") for n in range(8)])
    assert first.status_code == 202 and first.json()["accepted"] == 8  # 8 of 10 tokens
    refused = await client.post(url, json=[view(f"t{n}") for n in range(5)])
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    events = samples(edge, "proxima_edge_events_total")
    assert events["outcome=accepted"] == 8  # the refused batch left nothing behind
    sessions = edge.app.state.edge.sessions
    assert await sessions.get("t0") is None
    # Charged per request, all three posts would have passed; one token is left now.
    assert (await client.post(url, json=[view("u0")])).status_code == 202
    assert (await client.post(url, json=[view("u1")])).status_code == 429
