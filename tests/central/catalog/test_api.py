"""The catalog API over real HTTP into a real JetStream KV: writes, ordering, bad input."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import nats
import pytest

from central.catalog.api import sign
from central.catalog.store import CatalogStore
from tests.central.catalog.conftest import SECRET, Catalog


async def stored(catalog: Catalog, item_id: str) -> dict[str, object] | None:
    client = await nats.connect(catalog.nats_url)
    try:
        store = await CatalogStore.open(client.jetstream())
        found = await store.get(item_id)
        return None if found is None else found.item.to_dict()
    finally:
        await client.close()


async def test_put_creates_then_an_older_version_never_overwrites(catalog: Catalog) -> None:
    response = await catalog.http.put(
        "/v1/catalog/items", json=[{"id": "a", "price": 5, "version": 3}, {"id": "b"}]
    )
    assert response.status_code == 200, response.text
    assert [i["status"] for i in response.json()["items"]] == ["created", "created"]
    older = await catalog.http.put("/v1/catalog/items", json={"id": "a", "price": 1, "version": 2})
    assert older.json()["items"][0]["status"] == "stale"
    again = await catalog.http.put("/v1/catalog/items", json={"id": "a", "price": 5, "version": 3})
    assert again.json()["items"][0]["status"] == "unchanged"
    item = await stored(catalog, "a")
    assert item is not None and (item["price"], item["version"]) == (5.0, 3)


async def test_patch_and_delete_advance_the_version(catalog: Catalog) -> None:
    await catalog.http.put("/v1/catalog/items", json={"id": "a", "title": "A", "stock": 4})
    patched = await catalog.http.patch("/v1/catalog/items", json={"id": "a", "stock": 0})
    assert patched.json()["items"][0] | {"revision": 0} == {
        "id": "a", "status": "updated", "version": 2, "revision": 0,
    }  # fmt: skip
    deleted = await catalog.http.delete("/v1/catalog/items", params={"id": "a"})
    assert deleted.json()["items"][0]["status"] == "deleted"
    item = await stored(catalog, "a")
    assert item is not None and item["deleted"] is True and item["title"] == "A"
    # a late put of an older state does not bring it back
    late = await catalog.http.put("/v1/catalog/items", json={"id": "a", "version": 2})
    assert late.json()["items"][0]["status"] == "stale"


async def test_ndjson_bodies_are_batches(catalog: Catalog) -> None:
    body = b'{"id": "n1", "price": 1}\n\n{"id": "n2", "price": 2}\n'
    response = await catalog.http.put(
        "/v1/catalog/items", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert response.json()["counts"] == {"created": 2}


async def test_a_bad_item_refuses_the_whole_batch(catalog: Catalog) -> None:
    response = await catalog.http.put(
        "/v1/catalog/items", json=[{"id": "ok1"}, {"id": "bad", "price": -3}]
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "negative_price"
    assert response.json()["error"]["field"] == "[1].price"
    assert await stored(catalog, "ok1") is None


async def test_a_patch_of_a_missing_item_writes_nothing(catalog: Catalog) -> None:
    await catalog.http.put("/v1/catalog/items", json={"id": "here", "stock": 1})
    response = await catalog.http.patch(
        "/v1/catalog/items", json=[{"id": "here", "stock": 9}, {"id": "absent", "stock": 1}]
    )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "item_not_found")
    item = await stored(catalog, "here")
    assert item is not None and item["stock"] == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"id": "a", "colour": "red"}', {}, 400, "unknown_field"),
        (b'{"id": "a", "price": "1"}', {}, 400, "wrong_type"),
        (b'{"id": "a/b"}', {}, 400, "bad_item_id"),
        (b"{not json", {}, 400, "bad_json"),
        (b"[]", {}, 400, "empty_body"),
        (b'{"id": "a"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"id": "a"}', {"authorization": "Bearer wrong"}, 401, "unauthorized"),
        (b'{"id": "a"}', {"authorization": ""}, 401, "unauthorized"),
    ],
)
async def test_bad_requests_get_a_specific_4xx(
    catalog: Catalog, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    sent = {"content-type": "application/json", **headers}
    response = await catalog.http.put("/v1/catalog/items", content=body, headers=sent)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_a_body_over_the_limit_is_413_unread(catalog: Catalog) -> None:
    huge = b"[" + b'{"id": "a"},' * 200_000 + b'{"id": "b"}]'
    response = await catalog.http.put(
        "/v1/catalog/items", content=huge, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the stream is cut at the limit
        for _ in range(300):
            yield b" " * 8192

    streamed = await catalog.http.put(
        "/v1/catalog/items", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


def signed(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {
        "content-type": "application/json",
        "x-proxima-timestamp": str(stamp),
        "x-proxima-signature": sign(secret.encode(), stamp, body),
        "authorization": "",
    }


async def test_a_signed_webhook_is_applied_and_a_bad_one_refused(catalog: Catalog) -> None:
    body = json.dumps({"id": "w1", "available": False}).encode()
    ok = await catalog.http.post("/v1/catalog/webhook", content=body, headers=signed(body))
    assert ok.status_code == 200, ok.text
    item = await stored(catalog, "w1")
    assert item is not None and item["available"] is False

    wrong = await catalog.http.post(
        "/v1/catalog/webhook", content=body, headers=signed(body, secret="another-secret-xxxx")
    )
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "bad_signature")
    tampered = await catalog.http.post(
        "/v1/catalog/webhook", content=body.replace(b"false", b"true"), headers=signed(body)
    )
    assert tampered.status_code == 401
    old = await catalog.http.post(
        "/v1/catalog/webhook", content=body, headers=signed(body, at=int(time.time()) - 3600)
    )
    assert (old.status_code, old.json()["error"]["code"]) == (401, "stale_timestamp")
    item = await stored(catalog, "w1")
    assert item is not None and item["available"] is False


async def test_get_shows_an_item_and_404s_an_unknown_one(catalog: Catalog) -> None:
    await catalog.http.put("/v1/catalog/items", json={"id": "g", "title": "G"})
    shown = await catalog.http.get("/v1/catalog/items/g")
    assert shown.json()["item"]["title"] == "G"
    missing = await catalog.http.get("/v1/catalog/items/nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "item_not_found")
