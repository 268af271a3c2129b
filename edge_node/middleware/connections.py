"""Connection limits below the ASGI app: per-address caps, a header deadline and size.

A connection that never finishes its headers never reaches the app (no middleware sees
it), yet holds a socket and memory for as long as the client likes: uvicorn arms its
keep-alive timeout only after a first answer. This is uvicorn's httptools protocol with
three guards added:

* at most ``per_address`` open connections from one peer address; one beyond that is
  answered 429 (``too_many_connections``, with Retry-After) as soon as its headers are in,
  or closed at a short deadline if they never come;
* a request's headers must be complete within ``header_timeout_s`` of the connection
  opening (or of the request's first byte on a kept-alive connection): 408
  ``header_timeout`` and the socket closed;
* headers beyond ``max_header_bytes`` are answered 431 and the socket closed.

A connection upgraded to a WebSocket leaves these counts: streams have their own caps
(:mod:`edge_node.streams`).
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from http import HTTPStatus
from typing import Any, Final, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edge_node.errors import EdgeError, RateLimited
from edge_node.metrics import EdgeMetrics

MAX_HEADER_BYTES = 64 * 1024
REFUSED_DEADLINE_S = 1.0  # how long a refused connection may take to say what it wants


class ConnectionGuard:
    """Open connections by peer address, shared by every connection of one server."""

    def __init__(
        self,
        per_address: int,
        header_timeout_s: float,
        metrics: EdgeMetrics | None = None,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.per_address = per_address
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.metrics = metrics
        self.by_address: dict[str, int] = {}
        self.open = 0

    def admit(self, address: str) -> bool:
        held = self.by_address.get(address, 0)
        if held >= self.per_address:
            self.refused("connections")
            return False
        self.by_address[address] = held + 1
        self._count(1)
        return True

    def release(self, address: str) -> None:
        left = self.by_address.get(address, 0) - 1
        if left > 0:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)
        self._count(-1)

    def refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()

    def _count(self, delta: int) -> None:
        self.open += delta
        if self.metrics is not None:
            self.metrics.connections.set(self.open)


def raw_answer(error: EdgeError) -> bytes:
    """A whole HTTP/1.1 answer for ``error`` that tells the client the socket closes."""
    body = error.body()
    lines = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{name}: {value}" for name, value in error.headers().items()),
        "connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HeaderTimeout(EdgeError):
    """A request's headers did not arrive within the header deadline."""

    status = 408
    code = "header_timeout"


class HeadersTooLarge(EdgeError):
    """A request's headers are larger than the edge reads."""

    status = 431
    code = "headers_too_large"


LINGER_S: Final = 2.0  # how long a closing socket still reads what the client sends


class LingeringTransport:
    """A transport whose ``close()`` lingers, as nginx's lingering close does.

    Closing a socket that still has unread bytes from the client makes the kernel send a
    reset, which can destroy the answer (a 408, 431 or 429) before the client reads it. So
    ``close()`` sends the answer and a FIN, then reads and drops what the client still sends
    for up to :data:`LINGER_S` before the socket really closes.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.lingering = False
        self._closer: TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        self.lingering = True
        try:
            if self._transport.can_write_eof():
                self._transport.write_eof()
        except OSError:
            self._transport.close()
            return
        loop = asyncio.get_running_loop()
        self._closer = loop.call_later(LINGER_S, self._transport.close)

    def abort(self) -> None:
        if self._closer is not None:
            self._closer.cancel()
        self._transport.abort()


def guarded_protocol(guard: ConnectionGuard) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with ``guard``'s limits, for ``Config(http=...)``."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _address = "-"
        _admitted = False
        _header_timer: TimerHandle | None = None
        _header_bytes = 0
        _in_headers = True

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(cast(asyncio.Transport, LingeringTransport(transport)))
            self._address = self.client[0] if self.client else "-"
            self._admitted = guard.admit(self._address)
            deadline = guard.header_timeout_s
            if not self._admitted:
                deadline = min(deadline, REFUSED_DEADLINE_S)
            self._header_timer = self.loop.call_later(deadline, self._headers_late)

        def data_received(self, data: bytes) -> None:
            if cast(LingeringTransport, self.transport).lingering:
                return  # answered and closing: what still arrives is read and dropped
            super().data_received(data)
            if not self._in_headers or self.transport.is_closing():
                return
            self._header_bytes += len(data)  # still no complete headers: all of it is header
            if self._header_bytes > guard.max_header_bytes:
                guard.refused("headers_too_large")
                self._answer_and_close(
                    HeadersTooLarge(f"headers are at most {guard.max_header_bytes} bytes")
                )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            if self._header_timer is None:  # a kept-alive connection's next request
                self._header_bytes = 0
                self._header_timer = self.loop.call_later(
                    guard.header_timeout_s, self._headers_late
                )

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._cancel_timer()
            if not self._admitted:
                self._answer_and_close(
                    RateLimited(
                        "too many connections from this address",
                        code="too_many_connections",
                        retry_after_s=1,
                    )
                )
                return
            super().on_headers_complete()

        def handle_websocket_upgrade(self) -> None:
            if self.transport.is_closing():  # refused: already answered
                return
            self._leave_counts()
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._leave_counts()
            super().connection_lost(exc)

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            guard.refused("header_timeout")
            self._answer_and_close(
                HeaderTimeout(f"request headers must arrive within {guard.header_timeout_s:g} s")
            )

        def _answer_and_close(self, error: EdgeError) -> None:
            self._cancel_timer()
            if not self.transport.is_closing():
                self.transport.write(raw_answer(error))
                self.transport.close()

        def _cancel_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _leave_counts(self) -> None:
            self._cancel_timer()
            if self._admitted:
                self._admitted = False
                guard.release(self._address)

    return GuardedHttpToolsProtocol
