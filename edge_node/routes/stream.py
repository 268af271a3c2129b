"""``WS /v1/stream?session_id=``: pushes fresh recommendations after each event.

The server sends ``{"type": "recommendations", ...}`` on connect and after every event of
the session this node accepts; the client may send ``{"type": "ping"}`` (answered with
``{"type": "pong"}``). Anything else gets an ``{"type": "error", "error": {...}}`` frame;
the connection stays open. Close codes: 1008 bad parameters, 1013 too many streams (for
the session, the client address or the edge: the reason says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from edge_node import params
from edge_node.errors import EdgeError
from edge_node.recommend import Query
from edge_node.routes.common import edge_state
from edge_node.streams import Subscription, TooManyStreams

MAX_CLIENT_FRAME = 4096
MAX_CLOSE_REASON_BYTES = 123


async def stream(websocket: WebSocket) -> None:
    state = edge_state(websocket)
    try:
        query = Query(
            session_id=params.session_id(websocket.query_params),
            k=params.k(websocket.query_params, state.settings.default_k),
            slot=params.slot(websocket.query_params),
            context=params.context(websocket.query_params),
        )
    except EdgeError as exc:
        await _refuse(websocket, 1008, exc.message)
        return
    client = websocket.client
    try:
        subscription = state.streams.subscribe(query.session_id, client.host if client else "-")
    except TooManyStreams as exc:
        state.recommender.observer.rejected("streams")
        await _refuse(websocket, 1013, f"too many streams for this {exc.scope}")
        return
    send_lock = asyncio.Lock()
    try:
        await websocket.accept()
        subscription.changed.set()  # the first push answers right away
        pusher = asyncio.create_task(
            _push(websocket, state.recommender.answer, query, subscription, send_lock)
        )
        try:
            await _receive(websocket, send_lock)
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await pusher
    finally:
        state.streams.unsubscribe(subscription)


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    # A close before the accept is turned into an HTTP 403 by the server, and the client
    # never sees the code: accept, then close.
    await websocket.accept()
    # A close reason is at most 123 bytes of UTF-8, and the message may name a long
    # non-ASCII ctx.* key: cut by bytes, not characters, dropping a split character.
    fitting = reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
    await websocket.close(code=code, reason=fitting)


async def _push(
    websocket: WebSocket, answer: Any, query: Query, subscription: Subscription, lock: asyncio.Lock
) -> None:
    while True:
        await subscription.changed.wait()
        subscription.changed.clear()
        try:
            message = {"type": "recommendations", **(await answer(query))}
        except EdgeError as exc:
            message = {"type": "error", "error": {"code": exc.code, "message": exc.message}}
        await _send(websocket, message, lock)


async def _receive(websocket: WebSocket, lock: asyncio.Lock) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await _send(websocket, _error("binary_frame", "send JSON text frames"), lock)
            continue
        if len(text) > MAX_CLIENT_FRAME:
            await _send(
                websocket,
                _error("frame_too_large", f"frames are at most {MAX_CLIENT_FRAME} characters"),
                lock,
            )
            continue
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            await _send(websocket, _error("malformed_json", "the frame is not valid JSON"), lock)
            continue
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await _send(websocket, {"type": "pong"}, lock)
        else:
            await _send(
                websocket,
                _error("unknown_frame", 'the only client frame is {"type": "ping"}'),
                lock,
            )


async def _send(websocket: WebSocket, message: dict[str, Any], lock: asyncio.Lock) -> None:
    async with lock:
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.send_text(orjson.dumps(message).decode())


def _error(code: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": text}}
