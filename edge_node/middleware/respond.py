"""Sends an :class:`EdgeError` as a complete HTTP answer from inside a middleware."""

from __future__ import annotations

from starlette.types import Send

from edge_node.errors import EdgeError


async def send_error(send: Send, error: EdgeError) -> None:
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
