"""Reading a request body within bounds of size, time and rate.

A client that announces a body and then trickles it holds a slot of the in-flight cap for
as long as it likes unless the read has deadlines. :func:`read_body` gives a body a total
deadline (``timeout_s``) and, after a grace period, a minimum rate: by ``grace_s + n /
min_rate`` seconds after the headers, the first ``n`` bytes must have arrived. A body that
falls behind is answered 408 (``body_too_slow`` or ``body_timeout``) with ``Connection:
close``, so the server closes the socket rather than reading the rest.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import Request

from edge_node.config import EdgeSettings
from edge_node.errors import BadRequest, EdgeError, PayloadTooLarge


class RequestTimeout(EdgeError):
    """The request body did not arrive in time or at the minimum rate."""

    status = 408
    code = "body_timeout"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "connection": "close"}


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int
    timeout_s: float
    min_rate: int  # bytes per second, enforced after grace_s
    grace_s: float

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> BodyLimits:
        return cls(
            max_bytes=settings.max_body_bytes,
            timeout_s=settings.body_timeout_s,
            min_rate=settings.body_min_rate,
            grace_s=settings.body_rate_grace_s,
        )


async def read_body(request: Request, limits: BodyLimits) -> bytes:
    """The whole body; raises 413 past ``max_bytes``, 408 when it is late or too slow, 400
    when the client disconnects first or sends a bad ``Content-Length``."""
    limit = limits.max_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(
                "Content-Length is not a number", code="bad_header", field="content-length"
            )
        if int(declared) > limit:
            raise PayloadTooLarge(f"a request body is at most {limit} bytes", code="body_too_large")
    loop = asyncio.get_running_loop()
    started = loop.time()
    total_deadline = started + limits.timeout_s
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        rate_deadline = started + limits.grace_s + size / limits.min_rate
        deadline = min(total_deadline, rate_deadline)
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError as exc:
            if deadline == total_deadline:
                raise RequestTimeout(
                    f"the request body did not arrive within {limits.timeout_s:g} s"
                ) from exc
            raise RequestTimeout(
                f"the request body arrived slower than {limits.min_rate} bytes/s",
                code="body_too_slow",
            ) from exc
        if message["type"] == "http.disconnect":
            # The client gave up before sending the body it announced: its fault, not ours
            # (as a 500 it would count against the model being rolled out).
            raise BadRequest(
                "the connection closed before the body was complete", code="incomplete_body"
            )
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"a request body is at most {limit} bytes", code="body_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
