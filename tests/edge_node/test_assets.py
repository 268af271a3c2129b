"""The snippet and demo storefront files: content types, caching, ETag revalidation.

The snippet is the product's (``edge_node/static``); the storefront is a dev tool
(``devtools/storefront``) an edge serves only with ``storefront_dir`` set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.demo.edges import STOREFRONT_DIR
from edge_node.app import prepare
from edge_node.config import EdgeSettings
from edge_node.errors import SettingsError
from edge_node.routes.assets import STATIC_DIR, etag_matches
from tests.edge_node.conftest import EdgeFactory, EdgeServer, Keys

SNIPPET = "/sdk/v1/proxima.js"
DEMO_FILES = {
    "/demo/": ("index.html", "text/html; charset=utf-8"),
    "/demo/storefront.css": ("storefront.css", "text/css; charset=utf-8"),
    "/demo/storefront.js": ("storefront.js", "text/javascript; charset=utf-8"),
}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def file_etag(relative: str, directory: Path = STATIC_DIR) -> str:
    return '"' + hashlib.sha256((directory / relative).read_bytes()).hexdigest()[:32] + '"'


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
    storefront_edge: EdgeServer, client: httpx.AsyncClient, path: str
) -> None:
    edge = storefront_edge
    relative, media_type = DEMO_FILES[path]

    response = await client.get(f"{edge.url}{path}")
    again = await client.get(
        f"{edge.url}{path}", headers={"if-none-match": response.headers["etag"]}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"] == file_etag(relative, STOREFRONT_DIR)
    assert response.content == (STOREFRONT_DIR / relative).read_bytes()
    assert again.status_code == 304
    assert again.content == b""


async def test_demo_page_loads_the_snippet_under_a_strict_policy(
    storefront_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{storefront_edge.url}/demo/")

    assert f'<script src="{SNIPPET}"' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy


async def test_demo_without_the_slash_redirects(
    storefront_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{storefront_edge.url}/demo")

    assert response.status_code in (307, 308)
    assert response.headers["location"].endswith("/demo/")


async def test_demo_items_give_category_and_price_from_the_bundle(
    storefront_edge: EdgeServer, client: httpx.AsyncClient
) -> None:
    edge = storefront_edge
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
    storefront_edge: EdgeServer, client: httpx.AsyncClient, query: str, code: str
) -> None:
    response = await client.get(f"{storefront_edge.url}/demo/items.json{query}")

    assert assert_error(response, 400, code)["field"] == "ids"


@pytest.mark.parametrize("ids", [",".join(f"i{n}" for n in range(101)), "x" * 129])
async def test_demo_items_refuses_too_many_or_too_long_ids(
    storefront_edge: EdgeServer, client: httpx.AsyncClient, ids: str
) -> None:
    response = await client.get(f"{storefront_edge.url}/demo/items.json", params={"ids": ids})

    assert assert_error(response, 400, "bad_parameter")["field"] == "ids"


async def test_the_storefront_is_off_by_default_while_the_snippet_stays(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory()
    assert edge.settings.storefront_dir is None

    for path in [*DEMO_FILES, "/demo/items.json?ids=i001"]:
        error = assert_error(await client.get(f"{edge.url}{path}"), 404, "not_found")
        assert "--storefront-dir" in error["message"]
    assert (await client.get(f"{edge.url}{SNIPPET}")).status_code == 200


def test_a_storefront_dir_without_the_storefront_is_refused_at_start(
    tmp_path: Path, edge_keys: Keys, edge_bundle: Path
) -> None:
    settings = EdgeSettings(
        region="eu",
        node="n1",
        public_key=edge_keys.public,
        bundle=edge_bundle,
        storefront_dir=tmp_path / "empty",
    )

    with pytest.raises(SettingsError) as raised:
        prepare(settings)

    assert raised.value.field == "storefront_dir"
    assert "index.html" in raised.value.message
