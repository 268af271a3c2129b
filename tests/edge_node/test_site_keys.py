"""Browser ingest keys: publishable site keys bound to origins, beside secret server keys."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import msgpack
import pytest

from edge_node.errors import SettingsError
from edge_node.middleware.site_keys import ingest_keys
from tests.edge_node.conftest import EdgeFactory, EdgeServer

SHOP = "https://shop.example"
WWW = "https://www.shop.example"
EVIL = "https://evil.example"


def event() -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "session_id": "browser",
        "type": "view",
        "item_id": "i001",
        "ts": int(time.time() * 1000),
    }


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text


@pytest.fixture
def keyed(edge_factory: EdgeFactory) -> EdgeServer:
    # pk_old and pk_new are both valid while pages move from one to the other.
    return edge_factory(
        api_keys=("sk_server",),
        site_keys=(f"pk_old={SHOP}", f"pk_new={SHOP}", f"pk_new={WWW}"),
    )


async def post(
    client: httpx.AsyncClient,
    edge: EdgeServer,
    *,
    wire: str = "json",
    headers: dict[str, str] | None = None,
    key: str | None = None,
) -> httpx.Response:
    params = {"key": key} if key is not None else None
    if wire == "json":
        body, media = httpx.Request("POST", "/", json=event()).content, "text/plain"
    else:
        body, media = msgpack.packb(event()), "application/msgpack"
    return await client.post(
        f"{edge.url}/v1/events",
        content=body,
        params=params,
        headers={"content-type": media, **(headers or {})},
    )


@pytest.mark.parametrize("wire", ["json", "msgpack"])
async def test_no_key_is_401_and_a_key_from_another_origin_is_403(
    keyed: EdgeServer, client: httpx.AsyncClient, wire: str
) -> None:
    assert_error(await post(client, keyed, wire=wire), 401, "missing_api_key")
    assert_error(
        await post(client, keyed, wire=wire, headers={"origin": SHOP}), 401, "missing_api_key"
    )
    assert_error(await post(client, keyed, wire=wire, key="pk_nope"), 401, "bad_api_key")
    from_evil = await post(client, keyed, wire=wire, key="pk_new", headers={"origin": EVIL})
    assert_error(from_evil, 403, "origin_not_allowed")
    no_origin = await post(client, keyed, wire=wire, headers={"x-proxima-key": "pk_new"})
    assert_error(no_origin, 403, "origin_not_allowed")  # a site key is for pages only
    # pk_old is bound to SHOP alone.
    old_from_www = await post(client, keyed, wire=wire, key="pk_old", headers={"origin": WWW})
    assert_error(old_from_www, 403, "origin_not_allowed")


@pytest.mark.parametrize("wire", ["json", "msgpack"])
async def test_site_keys_from_their_origins_and_secret_keys_from_anywhere_are_accepted(
    keyed: EdgeServer, client: httpx.AsyncClient, wire: str
) -> None:
    accepted = [
        await post(client, keyed, wire=wire, key="pk_old", headers={"origin": SHOP}),
        await post(client, keyed, wire=wire, key="pk_new", headers={"origin": SHOP}),
        await post(client, keyed, wire=wire, key="pk_new", headers={"origin": WWW}),
        await post(client, keyed, wire=wire, headers={"x-proxima-key": "pk_new", "origin": WWW}),
        await post(client, keyed, wire=wire, headers={"x-proxima-key": "sk_server"}),
        await post(client, keyed, wire=wire, headers={"authorization": "Bearer sk_server"}),
    ]
    for response in accepted:
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 1


async def test_a_secret_key_is_never_taken_from_the_url(
    keyed: EdgeServer, client: httpx.AsyncClient
) -> None:
    assert_error(await post(client, keyed, key="sk_server"), 401, "bad_api_key")


async def test_preflight_is_answered_for_site_key_origins_only(
    keyed: EdgeServer, client: httpx.AsyncClient
) -> None:
    def preflight(origin: str) -> Any:
        return client.options(
            f"{keyed.url}/v1/events",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, x-proxima-key",
            },
        )

    for origin in (SHOP, WWW):
        allowed = await preflight(origin)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == origin
        assert "x-proxima-key" in allowed.headers["access-control-allow-headers"].lower()
    refused = await preflight(EVIL)
    assert_error(refused, 400, "cors_refused")
    assert "access-control-allow-origin" not in refused.headers


async def test_an_edge_without_keys_stays_open(
    edge_factory: EdgeFactory, client: httpx.AsyncClient
) -> None:
    edge = edge_factory()
    assert (await post(client, edge)).status_code == 202


def test_malformed_site_keys_are_refused_at_start() -> None:
    for entries in (
        ("pk_1",),
        ("=https://shop.example",),
        ("pk_1=shop.example",),
        ("pk_1=https://shop.example/path",),
        ("pk_1=https://user@shop.example",),
    ):
        with pytest.raises(SettingsError) as raised:
            ingest_keys((), entries)
        assert raised.value.field == "site_keys"
    with pytest.raises(SettingsError):
        ingest_keys(("same",), ("same=https://shop.example",))
    keys = ingest_keys((), ("pk_1=https://shop.example/",))
    assert keys.origins == {"https://shop.example"}
