"""Errors the edge answers with. Each carries an HTTP status and a stable code.

A subtree of :class:`protocol.errors.ProximaError`, which gives them their ``message``,
``field``, ``retry_after_s``, ``body()`` and ``headers()`` (the whole tree is drawn there)::

    ProximaError                  (protocol.errors)
    └── EdgeError                 500
        ├── BadRequest            400  a parameter or body is malformed
        ├── Unauthorized          401  a required API key is missing or wrong
        ├── NotFound              404
        ├── PayloadTooLarge       413
        ├── UnsupportedMediaType  415
        ├── RateLimited           429  with Retry-After
        ├── Overloaded            503  with Retry-After (concurrency, full queue or spool)
        ├── NotReady              503  no verified bundle loaded yet
        └── TooManyStreams        429  edge_node.streams: a session's streams are capped

Bad configuration at start-up is :class:`runtime.settings.SettingsError`, the one settings
error of every service; it is importable from here too.

Bodies follow DESIGN §2: ``{"error": {"code", "message", "field"?}}``; never a traceback.
"""

from __future__ import annotations

from protocol.errors import ProximaError
from runtime.settings import SettingsError as SettingsError


class EdgeError(ProximaError):
    """Root of every error the edge answers a client with."""

    code = "internal_error"
    status = 500


class BadRequest(EdgeError):
    status = 400
    code = "bad_request"


class Unauthorized(EdgeError):
    status = 401
    code = "unauthorized"


class NotFound(EdgeError):
    status = 404
    code = "not_found"


class PayloadTooLarge(EdgeError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(EdgeError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(EdgeError):
    status = 429
    code = "rate_limited"


class Overloaded(EdgeError):
    status = 503
    code = "overloaded"


class NotReady(EdgeError):
    status = 503
    code = "not_ready"
