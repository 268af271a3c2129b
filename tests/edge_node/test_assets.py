"""The snippet and demo storefront files: content types, caching, ETag revalidation."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from edge_node.routes.assets import STATIC_DIR, etag_matches
from tests.edge_node.conftest import EdgeFactory, EdgeServer

SNIPPET = "/sdk/v1/proxima.js"
DEMO_FILES = {
    "/demo/": ("demo/index.html", "text/html; charset=utf-8"),
    "/demo/storefront.css": ("demo/storefront.css", "text/css; charset=utf-8"),
    "/demo/storefront.js": ("demo/storefront.js", "text/javascript; charset=utf-8"),
}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def file_etag(relative: str) -> str:
    return '"' + hashlib.sha256((STATIC_DIR / relative).read_bytes()).hexdigest()[:32] + '"'


# -- the snippet ------------------------------------------------------------------------------


async def test_snippet_is_javascript_cached_as_immutable(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}{SNIPPET}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["etag"] == file_etag("proxima.js")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.content == (STATIC_DIR / "proxima.js").read_bytes()


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"other", {etag}', "*"],
    ids=["exact", "weak", "list", "any"],
)
async def test_snippet_answers_304_to_a_matching_if_none_match(
    edge: EdgeServer, client: httpx.AsyncClient, if_none_match: str
) -> None:
    etag = file_etag("proxima.js")

    response = await client.get(
        f"{edge.url}{SNIPPET}", headers={"if-none-match": if_none_match.format(etag=etag)}
    )

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_snippet_answers_200_to_a_stale_etag(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}{SNIPPET}", headers={"if-none-match": '"stale"'})

    assert response.status_code == 200
    assert response.content == (STATIC_DIR / "proxima.js").read_bytes()


async def test_snippet_answers_head_without_a_body(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.head(f"{edge.url}{SNIPPET}")

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"] == file_etag("proxima.js")


async def test_snippet_refuses_other_methods_with_a_json_error(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.post(f"{edge.url}{SNIPPET}", content=b"x")

    assert_error(response, 405, "method_not_allowed")


def test_etag_comparison_is_weak_and_reads_lists() -> None:
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches(' "b" ,W/"a"', '"a"')
    assert etag_matches("*", '"a"')
    assert not etag_matches('"ab"', '"a"')
    assert not etag_matches("", '"a"')
    assert not etag_matches(None, '"a"')


# -- the demo storefront --------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DEMO_FILES))
async def test_demo_files_are_revalidated_on_every_load(
    edge: EdgeServer, client: httpx.AsyncClient, path: str
) -> None:
    relative, media_type = DEMO_FILES[path]

    response = await client.get(f"{edge.url}{path}")
    again = await client.get(
        f"{edge.url}{path}", headers={"if-none-match": response.headers["etag"]}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"] == file_etag(relative)
    assert response.content == (STATIC_DIR / relative).read_bytes()
    assert again.status_code == 304
    assert again.content == b""


async def test_demo_page_loads_the_snippet_under_a_strict_policy(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}/demo/")

    assert f'<script src="{SNIPPET}"' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy


async def test_demo_without_the_slash_redirects(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{edge.url}/demo")

    assert response.status_code in (307, 308)
    assert response.headers["location"].endswith("/demo/")


async def test_demo_items_give_category_and_price_from_the_bundle(
    edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    popular = (
        await client.get(f"{edge.url}/v1/recommendations", params={"session_id": "c", "k": 3})
    ).json()
    ids = [item["item_id"] for item in popular["items"]]

    response = await client.get(
        f"{edge.url}/demo/items.json", params={"ids": ",".join([*ids, "no-such-item", ids[0]])}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == popular["model_version"]
    assert [item["item_id"] for item in body["items"]] == ids
    for item in body["items"]:
        assert isinstance(item["category"], str) and item["category"]
        assert isinstance(item["price"], float | int) and item["price"] > 0


@pytest.mark.parametrize(
    ("query", "code"),
    [("", "missing_parameter"), ("?ids=", "missing_parameter"), ("?ids=,,", "missing_parameter")],
)
async def test_demo_items_without_ids_is_a_bad_request(
    edge: EdgeServer, client: httpx.AsyncClient, query: str, code: str
) -> None:
    response = await client.get(f"{edge.url}/demo/items.json{query}")

    assert assert_error(response, 400, code)["field"] == "ids"


@pytest.mark.parametrize("ids", [",".join(f"i{n}" for n in range(101)), "x" * 129])
async def test_demo_items_refuses_too_many_or_too_long_ids(
    edge: EdgeServer, client: httpx.AsyncClient, ids: str
) -> None:
    response = await client.get(f"{edge.url}/demo/items.json", params={"ids": ids})

    assert assert_error(response, 400, "bad_parameter")["field"] == "ids"


async def test_demo_can_be_switched_off_while_the_snippet_stays(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory(demo_page=False)

    for path in [*DEMO_FILES, "/demo/items.json?ids=i001"]:
        assert_error(await client.get(f"{edge.url}{path}"), 404, "not_found")
    assert (await client.get(f"{edge.url}{SNIPPET}")).status_code == 200
