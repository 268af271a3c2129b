"""``GET /v1/recommendations`` against a real edge: answers, parameters, and the seed rules."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.edge_node.conftest import EdgeFactory, EdgeServer, start_edge_without_bundle

SEED_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules" / "seed.yaml"
BUNDLE_VERSION = 7  # the version the edge_bundle fixture is trained as
ALWAYS_FIRING_SEED_RULES = {"never-bought-again", "out-of-stock-last"}


def unique_session(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def view(session_id: str, item_id: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": session_id,
        "type": "view",
        "item_id": item_id,
        "ts": int(time.time() * 1000),
    }


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"].get("field") == field


async def recommend(
    client: httpx.AsyncClient, edge: EdgeServer, **params: str | int
) -> httpx.Response:
    return await client.get(f"{edge.url}/v1/recommendations", params=params)


async def post_events(client: httpx.AsyncClient, edge: EdgeServer, events: list[Any]) -> None:
    response = await client.post(
        f"{edge.url}/v1/events",
        content=json.dumps(events),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["rejected"] == 0


def item_ids(answer: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


# -- answers ------------------------------------------------------------------------------------


async def test_a_cold_session_gets_the_popular_items(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    first = await recommend(client, edge, session_id=unique_session("cold"))
    other = await recommend(client, edge, session_id=unique_session("cold"))

    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["cold"] is True
    assert len(answer["items"]) == edge.settings.default_k
    assert item_ids(answer) == item_ids(other.json())
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_a_session_with_events_is_ranked(edge: EdgeServer, client: httpx.AsyncClient) -> None:
    session = unique_session("ranked")
    popular = item_ids((await recommend(client, edge, session_id=session)).json())

    await post_events(client, edge, [view(session, popular[3]), view(session, popular[9])])
    answer = (await recommend(client, edge, session_id=session)).json()

    assert answer["cold"] is False
    assert answer["items"]
    assert item_ids(answer) != popular


async def test_the_answer_has_the_documented_shape(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("shape")

    response = await recommend(client, edge, session_id=session, k=5)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert set(answer) >= {
        "request_id",
        "session_id",
        "model_version",
        "precision",
        "items",
        "rules",
        "offers",
        "cold",
        "stale",
    }
    assert isinstance(answer["request_id"], str) and answer["request_id"]
    assert answer["session_id"] == session
    assert answer["model_version"] == BUNDLE_VERSION
    assert answer["model_version"] == edge.app.state.edge.models.current.version
    assert answer["precision"] == edge.app.state.edge.models.current.precision
    assert 0 < len(answer["items"]) <= 5
    assert answer["policy"] == "none"
    for position, item in enumerate(answer["items"]):
        assert set(item) == {"item_id", "score", "position", "propensity"}
        assert isinstance(item["item_id"], str)
        assert isinstance(item["score"], int | float)
        assert item["position"] == position
        assert item["propensity"] == 1.0  # no exploration
    assert len(set(item_ids(answer))) == len(answer["items"])
    assert answer["rules"] == []
    assert answer["offers"] == []
    assert answer["stale"] is False


async def test_every_answer_has_its_own_request_id(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("ids")

    request_ids = [
        (await recommend(client, edge, session_id=session)).json()["request_id"] for _ in range(20)
    ]

    assert len(set(request_ids)) == len(request_ids)


@pytest.mark.parametrize("k", [1, 7, 100])
async def test_k_bounds_the_number_of_items(
    edge: EdgeServer, client: httpx.AsyncClient, k: int
) -> None:
    answer = (await recommend(client, edge, session_id=unique_session("k"), k=k)).json()

    assert 0 < len(answer["items"]) <= k
    if k <= 20:
        assert len(answer["items"]) == k


async def test_default_k_comes_from_the_settings(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(default_k=3)

    answer = (await recommend(client, edge, session_id=unique_session("default"))).json()

    assert len(answer["items"]) == 3


async def test_a_valid_slot_and_context_are_accepted(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    context = {f"ctx.key{n}": f"value {n} ünïcode" for n in range(16)}

    response = await client.get(
        f"{edge.url}/v1/recommendations",
        params={"session_id": unique_session("ctx"), "slot": "product-page:top_1.a", **context},
    )

    assert response.status_code == 200, response.text


# -- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({}, "missing_parameter", "session_id"),
        ({"session_id": ""}, "missing_parameter", "session_id"),
        ({"session_id": "s" * 129}, "bad_parameter", "session_id"),
        ({"session_id": "tab\there"}, "bad_parameter", "session_id"),
        ({"session_id": "s", "k": "0"}, "bad_parameter", "k"),
        ({"session_id": "s", "k": "101"}, "bad_parameter", "k"),
        ({"session_id": "s", "k": "abc"}, "bad_parameter", "k"),
        ({"session_id": "s", "k": "-1"}, "bad_parameter", "k"),
        ({"session_id": "s", "k": "2.5"}, "bad_parameter", "k"),
        ({"session_id": "s", "k": ""}, "bad_parameter", "k"),
        ({"session_id": "s", "k": "²"}, "bad_parameter", "k"),
        ({"session_id": "s", "k": "٣"}, "bad_parameter", "k"),
        ({"session_id": "s", "k": "9" * 5000}, "bad_parameter", "k"),
        ({"session_id": "s", "slot": ""}, "bad_parameter", "slot"),
        ({"session_id": "s", "slot": "home page"}, "bad_parameter", "slot"),
        ({"session_id": "s", "slot": "s" * 65}, "bad_parameter", "slot"),
        ({"session_id": "s", "slot": "héllo"}, "bad_parameter", "slot"),
        ({"session_id": "s", "ctx.": "x"}, "bad_parameter", "ctx."),
        ({"session_id": "s", "ctx." + "k" * 65: "x"}, "bad_parameter", "ctx." + "k" * 65),
        ({"session_id": "s", "ctx.page": "p" * 257}, "bad_parameter", "ctx.page"),
        ({"session_id": "s", "ctx.page": "line\nbreak"}, "bad_parameter", "ctx.page"),
        (
            {"session_id": "s", **{f"ctx.key{n}": "v" for n in range(17)}},
            "bad_parameter",
            "ctx",
        ),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    edge: EdgeServer,
    client: httpx.AsyncClient,
    params: dict[str, str],
    code: str,
    field: str,
) -> None:
    response = await client.get(f"{edge.url}/v1/recommendations", params=params)

    assert_error(response, 400, code, field)


async def test_a_long_context_key_is_named_shortened(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    key = "ctx." + "k" * 500

    response = await client.get(
        f"{edge.url}/v1/recommendations", params={"session_id": "s", key: "x"}
    )

    assert_error(response, 400, "bad_parameter", key[:80])


async def test_repeated_context_keys_count_once(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    params = [("session_id", "s")] + [("ctx.page", str(n)) for n in range(40)]

    response = await client.get(f"{edge.url}/v1/recommendations", params=params)

    assert response.status_code == 200, response.text


async def test_a_session_over_its_rate_gets_429_with_retry_after(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(session_rate=0.001, session_burst=2)
    session = unique_session("rate")

    answers = [await recommend(client, edge, session_id=session) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert_error(answers[2], 429, "rate_limited", None)
    assert int(answers[2].headers["retry-after"]) >= 1
    other = await recommend(client, edge, session_id=unique_session("other"))
    assert other.status_code == 200


async def test_without_a_bundle_the_answer_is_503_not_ready(
    edge_factory: EdgeFactory, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    edge = start_edge_without_bundle(edge_factory, tmp_path)

    response = await recommend(client, edge, session_id="s")

    assert_error(response, 503, "not_ready", None)
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_with_a_json_body(
    edge: EdgeServer, client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, f"{edge.url}/v1/recommendations?session_id=s")

    assert_error(response, 405, "method_not_allowed", None)


# -- seed rules ---------------------------------------------------------------------------------


@pytest.fixture
def ruled_edge(edge_factory: EdgeFactory) -> EdgeServer:
    return edge_factory(rules=SEED_RULES)


async def test_two_views_of_an_item_within_ten_minutes_attach_the_discount(
    ruled_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("second-look")
    cold = (await recommend(client, ruled_edge, session_id=session, k=10)).json()
    # An item well down the popularity list, so its first place is the pin's doing.
    item = item_ids((await recommend(client, ruled_edge, session_id=session, k=40)).json())[30]
    assert item not in item_ids(cold)

    await post_events(client, ruled_edge, [view(session, item), view(session, item)])
    answer = (await recommend(client, ruled_edge, session_id=session, k=10)).json()

    assert "second-look-discount" in answer["rules"]
    assert answer["offers"] == [
        {
            "kind": "discount",
            "percent": 10,
            "code": "SECONDLOOK",
            "rule": "second-look-discount",
            "item": item,
        }
    ]
    assert item_ids(answer)[0] == item
    assert len(answer["items"]) <= 10


async def test_one_view_attaches_no_discount(
    ruled_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("one-look")

    await post_events(client, ruled_edge, [view(session, "i001"), view(session, "i002")])
    answer = (await recommend(client, ruled_edge, session_id=session)).json()

    assert "second-look-discount" not in answer["rules"]
    assert answer["offers"] == []


async def test_unconditional_seed_rules_fire_on_every_answer(
    ruled_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    answer = (await recommend(client, ruled_edge, session_id=unique_session("always"))).json()

    assert set(answer["rules"]) == ALWAYS_FIRING_SEED_RULES
    assert answer["offers"] == []


async def test_slot_scoped_seed_rules_fire_only_in_their_slot(
    ruled_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("slot")

    checkout = (await recommend(client, ruled_edge, session_id=session, slot="checkout")).json()
    home = (await recommend(client, ruled_edge, session_id=session, slot="search")).json()

    assert "checkout-add-ons-stay-cheap" in checkout["rules"]
    assert "checkout-add-ons-stay-cheap" not in home["rules"]


async def test_rules_fired_are_counted_in_metrics(
    ruled_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = unique_session("counted")
    await post_events(client, ruled_edge, [view(session, "i002"), view(session, "i002")])
    await recommend(client, ruled_edge, session_id=session)

    text = (await client.get(f"{ruled_edge.url}/metrics")).text

    assert 'proxima_edge_rules_fired_total{rule="second-look-discount"} 1.0' in text
