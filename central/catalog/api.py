"""The catalog's HTTP API: ``PUT/PATCH/DELETE /v1/catalog/items`` and a signed webhook.

Bodies are one JSON object, a JSON array of them, or NDJSON (``application/x-ndjson``, one
object a line), at most ``catalog_max_body_bytes`` (413 ``body_too_large`` beyond, read no
further). The API asks for ``Authorization: Bearer <token>``; the webhook instead checks
``X-Proxima-Signature: sha256=<hex>``, the HMAC-SHA256 under the shared secret of
``<X-Proxima-Timestamp>.<body>``, compared in constant time, with a timestamp within
``webhook_tolerance_s`` of now (so a captured request cannot be replayed later). Its
``X-Proxima-Event`` header says ``put`` (default), ``patch`` or ``delete``.

Every change of a batch is checked before any is written: one bad item refuses the batch
with the item's position in ``field`` (``[3].price``) and the contract's stable code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from central.catalog.errors import (
    BodyTooLargeError,
    CatalogAuthError,
    CatalogBodyError,
    CatalogMediaTypeError,
    ItemNotFoundError,
    WebhookSignatureError,
)
from central.catalog.settings import CatalogSettings, same_secret
from central.catalog.store import CatalogStore, Outcome
from protocol.catalog import CatalogError, check_item_id, validate_item, validate_patch
from protocol.errors import ProximaError

SIGNATURE_HEADER: Final = "x-proxima-signature"
TIMESTAMP_HEADER: Final = "x-proxima-timestamp"
EVENT_HEADER: Final = "x-proxima-event"
MAX_BATCH_ITEMS: Final = 100_000

log = logging.getLogger("proxima.catalog")

StoreSource = Callable[[], Awaitable[CatalogStore]]


def catalog_app(settings: CatalogSettings, store: StoreSource) -> Starlette:
    token = settings.token()
    webhook_key = settings.webhook_key()
    limit = settings.catalog_max_body_bytes

    def authorize(request: Request) -> None:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not same_secret(value.strip(), token):
            raise CatalogAuthError("a valid 'Authorization: Bearer <token>' is required")

    async def put_items(request: Request) -> Response:
        authorize(request)
        return await _apply(await store(), "put", _parse(await _read(request, limit), request))

    async def patch_items(request: Request) -> Response:
        authorize(request)
        return await _apply(await store(), "patch", _parse(await _read(request, limit), request))

    async def delete_items(request: Request) -> Response:
        authorize(request)
        ids = request.query_params.getlist("id")
        changes = [{"id": i} for i in ids] if ids else _parse(await _read(request, limit), request)
        return await _apply(await store(), "delete", changes)

    async def get_item(request: Request) -> Response:
        authorize(request)
        item_id = check_item_id(request.path_params["item_id"])
        stored = await (await store()).get(item_id)
        if stored is None:
            raise ItemNotFoundError(f"no item {item_id!r}", field="id")
        return JSONResponse({"item": stored.item.to_dict(), "revision": stored.revision})

    async def webhook(request: Request) -> Response:
        if webhook_key is None:
            raise WebhookSignatureError("no webhook secret is configured", code="webhook_disabled")
        body = await _read(request, limit)
        _check_signature(request, body, webhook_key, settings.webhook_tolerance_s)
        op = request.headers.get(EVENT_HEADER, "put").lower()
        if op not in ("put", "patch", "delete"):
            raise CatalogBodyError(
                f"{EVENT_HEADER} must be put, patch or delete", code="bad_event", field=EVENT_HEADER
            )
        return await _apply(await store(), op, _parse(body, request))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/catalog/items", put_items, methods=["PUT", "POST"]),
            Route("/v1/catalog/items", patch_items, methods=["PATCH"]),
            Route("/v1/catalog/items", delete_items, methods=["DELETE"]),
            Route("/v1/catalog/items/{item_id}", get_item, methods=["GET"]),
            Route("/v1/catalog/webhook", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={ProximaError: _error, Exception: _unexpected},
    )


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The webhook signature header value of ``body`` sent at ``timestamp`` (seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _check_signature(request: Request, body: bytes, key: bytes, tolerance_s: float) -> None:
    stamp = request.headers.get(TIMESTAMP_HEADER, "")
    if not stamp.isdigit() or len(stamp) > 12:
        raise WebhookSignatureError(
            f"{TIMESTAMP_HEADER} must be whole seconds since the epoch", field=TIMESTAMP_HEADER
        )
    if abs(time.time() - int(stamp)) > tolerance_s:
        raise WebhookSignatureError(
            "the webhook's timestamp is too far from now", code="stale_timestamp",
            field=TIMESTAMP_HEADER,
        )  # fmt: skip
    given = request.headers.get(SIGNATURE_HEADER, "")
    expected = sign(key, int(stamp), body)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookSignatureError("the webhook signature does not match", field=SIGNATURE_HEADER)


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, request: Request) -> list[Any]:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media in ("application/x-ndjson", "application/ndjson", "application/jsonl"):
        changes = []
        for number, line in enumerate(body.splitlines(), 1):
            if line.strip():
                changes.append(_json(line, f"line {number}"))
    elif media == "application/json":
        decoded = _json(body, "the body")
        changes = decoded if isinstance(decoded, list) else [decoded]
    else:
        raise CatalogMediaTypeError("send application/json or application/x-ndjson")
    if not changes:
        raise CatalogBodyError("the body holds no changes", code="empty_body")
    if len(changes) > MAX_BATCH_ITEMS:
        raise CatalogBodyError(
            f"a batch holds at most {MAX_BATCH_ITEMS} changes", code="too_many_items"
        )
    return changes


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogBodyError(f"{what} is not valid JSON", code="bad_json") from exc
    except RecursionError as exc:
        raise CatalogBodyError(f"{what} nests too deeply", code="bad_json") from exc


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


async def _apply(store: CatalogStore, op: str, changes: list[Any]) -> Response:
    checked: list[Any] = []
    for position, change in enumerate(changes):
        try:
            if op == "put":
                checked.append(validate_item(change))
            elif op == "patch":
                checked.append(validate_patch(change))
            else:
                raw = change if isinstance(change, str) else _id_of(change)
                checked.append(check_item_id(raw))
        except CatalogError as exc:
            raise CatalogError(
                f"change {position}: {exc.message}", code=exc.code,
                field=f"[{position}].{exc.field}" if exc.field else f"[{position}]",
            ) from exc  # fmt: skip
    outcomes: list[Outcome]
    if op == "put":
        outcomes = await store.put(checked)
    elif op == "patch":
        outcomes = await store.patch(checked)
    else:
        outcomes = await store.delete(checked)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return JSONResponse({"items": [o.to_dict() for o in outcomes], "counts": counts})


def _id_of(change: object) -> object:
    if isinstance(change, dict):
        extra = set(change) - {"id"}
        if extra:
            raise CatalogError(
                f"unknown field {sorted(extra)[0][:64]!r}", code="unknown_field",
                field=str(sorted(extra)[0])[:64],
            )  # fmt: skip
        return change.get("id")
    raise CatalogError('a deletion is an item id or {"id": ...}', code="wrong_type", field="id")


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProximaError)
    return Response(
        exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers()
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"error": {"code": "internal_error", "message": "internal error"}}, 500)
