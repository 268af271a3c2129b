"""Query-string parsing with precise errors (400, naming the parameter)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from edge_node.errors import BadRequest

MAX_K = 100
MAX_CONTEXT_KEYS = 16
CONTEXT_PREFIX = "ctx."
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLOT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# ASCII digits only, and few of them: str.isdigit() accepts "²", which int() refuses, and
# int() refuses more than 4300 digits; either would otherwise escape as a 500.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")


def session_id(params: Mapping[str, str]) -> str:
    value = params.get("session_id")
    if value is None or value == "":
        raise BadRequest("session_id is required", code="missing_parameter", field="session_id")
    if len(value) > 128 or _CONTROL.search(value):
        raise BadRequest(
            "session_id must be 1-128 characters without control characters",
            code="bad_parameter",
            field="session_id",
        )
    return value


def k(params: Mapping[str, str], default: int) -> int:
    raw = params.get("k")
    if raw is None:
        return default
    if not _WHOLE_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= MAX_K:
        raise BadRequest(
            f"k must be a whole number from 1 to {MAX_K}", code="bad_parameter", field="k"
        )
    return int(raw)


def slot(params: Mapping[str, str]) -> str | None:
    value = params.get("slot")
    if value is None:
        return None
    if not _SLOT.fullmatch(value):
        raise BadRequest(
            "slot must be 1-64 characters of A-Z a-z 0-9 _ . : -",
            code="bad_parameter",
            field="slot",
        )
    return value


def context(params: Mapping[str, str]) -> dict[str, str]:
    """Request context from ``ctx.<key>=<value>`` parameters (page, device, locale …)."""
    found: dict[str, str] = {}
    for key, value in params.items():
        if not key.startswith(CONTEXT_PREFIX):
            continue
        name = key[len(CONTEXT_PREFIX) :]
        if not 1 <= len(name) <= 64 or _CONTROL.search(name):
            raise BadRequest(
                "context keys must be 1-64 characters", code="bad_parameter", field=key[:80]
            )
        if len(value) > 256 or _CONTROL.search(value):
            raise BadRequest(
                f"{key} must be at most 256 characters", code="bad_parameter", field=key
            )
        found[name] = value
        if len(found) > MAX_CONTEXT_KEYS:
            raise BadRequest(
                f"at most {MAX_CONTEXT_KEYS} ctx.* parameters", code="bad_parameter", field="ctx"
            )
    return found
