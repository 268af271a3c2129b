"""``POST /v1/events``: one event or a batch, JSON or msgpack; 202 with counts."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from edge_node.body import BodyLimits, read_body
from edge_node.errors import (
    BadRequest,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
)
from edge_node.middleware.client_rate import charge_client
from edge_node.middleware.site_keys import ingest_keys
from edge_node.routes.common import edge_state, json_response
from edge_node.uplink import UplinkOverloadedError, UplinkUnavailableError
from protocol.codec import Rejection, WireFormat, decode_body, encode_msgpack
from protocol.errors import EventError
from protocol.events import Event
from protocol.window import SessionWindow

_MEDIA_TYPES: dict[str, WireFormat] = {
    "application/json": "json",
    "text/plain": "json",  # what navigator.sendBeacon sends without a preflight
    "application/msgpack": "msgpack",
    "application/x-msgpack": "msgpack",
}


async def post_events(request: Request) -> Response:
    state = edge_state(request)
    wire = _wire_format(request)
    settings = state.settings
    ingest_keys(settings.api_keys, settings.site_keys).check(request.headers, request.query_params)
    body = await read_body(request, BodyLimits.from_settings(settings))
    try:
        batch = decode_body(body, wire)
    except EventError as exc:
        if exc.code == "body_too_large":  # max_body_bytes is set above the batch limit
            raise PayloadTooLarge(exc.message, code=exc.code) from exc
        raise BadRequest(exc.message, code=exc.code, field=exc.field) from exc
    # One token per event, not per request: refused whole, before anything is kept.
    charge_client(request.scope, len(batch.events) + len(batch.rejections))

    received_at = int(time.time() * 1000)
    observer = state.recommender.observer
    rejections = list(batch.rejections)
    admitted: list[Event] = []
    longest_wait = 0.0
    for index, event in enumerate(batch.events):
        wait = state.session_buckets.take(event.session_id)
        if wait:
            longest_wait = max(longest_wait, wait)
            observer.rejected("session_rate")
            error = EventError(
                f"session is over its rate limit; retry in {wait:.1f}s", code="rate_limited"
            )
            rejections.append(Rejection(index, error))
            continue
        admitted.append(event)
    # One Redis round trip for every session of the batch not held here; no window is
    # created before its events are safe in the spool.
    windows = await state.sessions.get_many(event.session_id for event in admitted)
    fresh: list[Event] = []
    seen_in_batch: set[str] = set()
    duplicates = 0
    for event in admitted:
        window = windows[event.session_id]
        if event.event_id in seen_in_batch or (
            window is not None and window.has_seen(event.event_id)
        ):
            duplicates += 1
            continue
        seen_in_batch.add(event.event_id)
        stamped = dataclasses.replace(
            event, received_at=received_at, region=settings.region, node=settings.node
        )
        fresh.append(stamped)

    if fresh:
        try:
            await state.uplink.submit([encode_msgpack(event) for event in fresh])
        except (UplinkOverloadedError, UplinkUnavailableError) as exc:
            observer.rejected("uplink")
            raise Overloaded(
                "event uplink is full; retry the same events later", retry_after_s=exc.retry_after_s
            ) from exc
    # Only now, with the events safe in the spool, do the windows take them.
    # An impression alone opens no window: it feeds click-through, not the session's state.
    changed: dict[str, SessionWindow] = {}
    for event in fresh:
        window = windows[event.session_id]
        if window is None:
            if event.type == "impression":
                continue
            window = windows[event.session_id] = state.sessions.create(event.session_id)
        window.add(event)
        changed[window.session_id] = window
    await state.sessions.save_many(changed.values())
    if state.users is not None:  # returning users: their recent items across sessions
        await state.users.record(fresh)
    for session_id in changed:
        state.streams.notify(session_id)

    feedback = state.recommender.feedback
    for event in fresh:
        if event.request_id is not None and event.type in ("impression", "click"):
            issued = feedback.verify(event.request_id, event.session_id)
            if isinstance(issued, str):  # kept as an event, not counted toward CTR
                observer.feedback_rejected(event.type, issued)
            else:
                observer.feedback(event.type, issued)
    observer.events(len(fresh), duplicates, len(rejections))
    if batch.single and rejections:
        error = rejections[0].error
        body_out: dict[str, Any] = {"error": error.to_dict()}
        if error.code == "rate_limited":
            retry_after = RateLimited(error.message, retry_after_s=longest_wait).headers()
            return json_response(body_out, status=429, headers=retry_after)
        return json_response(body_out, status=400)
    rejections.sort(key=lambda r: r.index)
    result = {
        "accepted": len(fresh),
        "duplicate": duplicates,
        "rejected": len(rejections),
        "rejections": [r.to_dict() for r in rejections[:100]],
    }
    return json_response(result, status=202)


def _wire_format(request: Request) -> WireFormat:
    media = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    wire = _MEDIA_TYPES.get(media)
    if wire is None:
        raise UnsupportedMediaType(
            "send events as application/json or application/msgpack", field="content-type"
        )
    return wire
