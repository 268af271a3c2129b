"""Errors the edge answers with. Each carries an HTTP status and a stable code.

    EdgeError
    ├── BadRequest            400  a parameter or body is malformed
    ├── Unauthorized          401  a required API key is missing or wrong
    ├── NotFound              404
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── RateLimited           429  with Retry-After
    ├── Overloaded            503  with Retry-After (concurrency, full queue or spool)
    ├── NotReady              503  no verified bundle loaded yet
    └── SettingsError         bad configuration at start-up (not an HTTP answer)

Bodies follow DESIGN §2: ``{"error": {"code", "message", "field"?}}``; never a traceback.
"""

from __future__ import annotations

import json
from typing import ClassVar


class EdgeError(Exception):
    status: ClassVar[int] = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after_s = retry_after_s

    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return json.dumps({"error": error}, separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after_s)))}


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


class SettingsError(EdgeError):
    code = "bad_settings"
