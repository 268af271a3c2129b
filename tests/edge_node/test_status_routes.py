"""Liveness, readiness, the model, metrics, the OpenAPI document, 404 and 405 answers."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from edge_node.app import ROUTES
from edge_node.metrics import STAGES
from tests.edge_node.conftest import EdgeFactory, EdgeServer, start_edge_without_bundle

BUNDLE_VERSION = 7  # the version the edge_bundle fixture is trained as
SEED_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules" / "seed.yaml"


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


# -- health and readiness -----------------------------------------------------------------------


async def test_healthz_answers_ok(edge: EdgeServer, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{edge.url}/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_a_bundle_reports_its_version(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}/readyz")

    assert response.status_code == 200
    assert response.json() == {"ready": True, "version": BUNDLE_VERSION, "stale": False}


async def test_without_a_bundle_the_edge_is_alive_but_not_ready(
    edge_factory: EdgeFactory, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    edge = start_edge_without_bundle(edge_factory, tmp_path)

    alive = await client.get(f"{edge.url}/healthz")
    ready = await client.get(f"{edge.url}/readyz")
    model = await client.get(f"{edge.url}/v1/model")

    assert alive.status_code == 200
    assert_error(ready, 503, "not_ready")
    assert ready.headers["retry-after"] == "1"
    assert model.status_code == 200
    assert model.json()["bundle"] is None


# -- the model ----------------------------------------------------------------------------------


async def test_model_reports_the_loaded_bundle(edge: EdgeServer, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{edge.url}/v1/model")

    assert response.status_code == 200
    body = response.json()
    assert body["region"] == edge.settings.region
    assert body["node"] == edge.settings.node
    assert body["stale"] is False
    assert body["last_refusal"] is None
    bundle = body["bundle"]
    assert bundle["version"] == BUNDLE_VERSION
    assert bundle["precision"] == edge.app.state.edge.models.current.precision
    assert isinstance(bundle["precision"], str) and bundle["precision"]
    assert bundle["items"] > 0
    assert "session_id" not in body
    assert "variant" not in body


async def test_model_with_a_session_names_its_variant(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}/v1/model", params={"session_id": "visitor-1"})

    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == "visitor-1"
    assert body["variant"] == "stable"


@pytest.mark.parametrize("session_id", ["", "s" * 129, "nul\x00"])
async def test_model_with_a_bad_session_is_400(
    edge: EdgeServer, client: httpx.AsyncClient, session_id: str
) -> None:
    response = await client.get(f"{edge.url}/v1/model", params={"session_id": session_id})

    error = assert_error(response, 400, "missing_parameter" if not session_id else "bad_parameter")
    assert error["field"] == "session_id"


async def test_model_reports_the_rules_version(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(rules=SEED_RULES)

    body = (await client.get(f"{edge.url}/v1/model")).json()

    assert body["rules_version"] == "seed-1"


# -- metrics ------------------------------------------------------------------------------------


async def test_metrics_have_a_latency_histogram_for_every_stage(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    session = f"metrics-{uuid.uuid4().hex[:8]}"
    await client.get(f"{edge.url}/v1/recommendations", params={"session_id": session})
    event = {
        "event_id": uuid.uuid4().hex,
        "session_id": session,
        "type": "view",
        "item_id": "i001",
        "ts": int(time.time() * 1000),
    }
    await client.post(f"{edge.url}/v1/events", json=event)
    for _ in range(3):
        await client.get(f"{edge.url}/v1/recommendations", params={"session_id": session})

    response = await client.get(f"{edge.url}/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    buckets = samples(text, "proxima_edge_stage_seconds_bucket")
    counts = {
        labels["stage"]: value
        for labels, value in samples(text, "proxima_edge_stage_seconds_count")
    }
    assert set(STAGES) == {"window", "candidates", "features", "inference", "rules", "total"}
    for stage in STAGES:
        stage_buckets = [(labels, value) for labels, value in buckets if labels["stage"] == stage]
        assert len(stage_buckets) > 1, stage
        assert any(labels["le"] == "+Inf" for labels, _ in stage_buckets)
        values = [value for _, value in stage_buckets]
        assert values == sorted(values), f"{stage} buckets are not cumulative"
        assert counts[stage] >= 3, stage
    assert counts["total"] == 4
    assert counts["inference"] == 3  # the cold answer ran no model
    events = {
        labels["outcome"]: value for labels, value in samples(text, "proxima_edge_events_total")
    }
    assert events["accepted"] == 1


async def test_metrics_count_requests_by_route_and_status(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    await client.get(f"{edge.url}/healthz")
    await client.get(f"{edge.url}/no/such/path")
    await client.get(f"{edge.url}/another/unknown")

    text = (await client.get(f"{edge.url}/metrics")).text

    requests = {
        (labels["route"], labels["status"]): value
        for labels, value in samples(text, "proxima_edge_requests_total")
    }
    assert requests[("/healthz", "200")] == 1
    assert requests[("other", "404")] == 2  # unknown paths share one label


# -- the OpenAPI document -----------------------------------------------------------------------


async def test_openapi_describes_every_route_the_app_serves(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]
    served = {route.path for route in ROUTES}
    assert set(schema["paths"]) == served
    for route in ROUTES:
        if isinstance(route, Route):
            assert route.methods is not None
            for method in route.methods - {"HEAD"}:
                assert method.lower() in schema["paths"][route.path], (route.path, method)


async def test_openapi_references_resolve(edge: EdgeServer, client: httpx.AsyncClient) -> None:
    schema = (await client.get(f"{edge.url}/openapi.json")).json()

    references: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    references.append(value)
                else:
                    collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    assert references
    for reference in references:
        target: Any = schema
        assert reference.startswith("#/")
        for part in reference[2:].split("/"):
            target = target[part]
        assert isinstance(target, dict)


# -- unknown paths and wrong methods ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/recommendation", "/v2/events", "/%00"])
async def test_an_unknown_path_is_404_with_a_json_body(
    edge: EdgeServer, client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(f"{edge.url}{path}")

    assert_error(response, 404, "not_found")


async def test_the_stream_route_over_plain_http_is_404_with_a_json_body(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}/v1/stream", params={"session_id": "s"})

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/healthz", {"GET", "HEAD"}),
        ("DELETE", "/readyz", {"GET", "HEAD"}),
        ("PUT", "/v1/model", {"GET", "HEAD"}),
        ("POST", "/metrics", {"GET", "HEAD"}),
        ("PATCH", "/openapi.json", {"GET", "HEAD"}),
        ("OPTIONS", "/v1/recommendations", {"GET", "HEAD"}),
        ("PUT", "/v1/events", {"POST"}),
    ],
)
async def test_a_wrong_method_is_405_with_a_json_body_and_allow(
    edge: EdgeServer, client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    response = await client.request(method, f"{edge.url}{path}")

    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


async def test_a_refused_cors_preflight_is_400_with_a_json_body(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(cors_origins=("https://shop.example",))
    preflight = {"access-control-request-method": "POST"}

    allowed = await client.options(
        f"{edge.url}/v1/events", headers={**preflight, "origin": "https://shop.example"}
    )
    refused = await client.options(
        f"{edge.url}/v1/events", headers={**preflight, "origin": "https://evil.example"}
    )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    error = assert_error(refused, 400, "cors_refused")
    assert "origin" in error["message"]
    assert "access-control-allow-origin" not in refused.headers
