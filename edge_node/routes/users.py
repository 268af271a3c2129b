"""``DELETE /v1/users/{user_id}``: erase a user (needs a secret server key)."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from edge_node.errors import BadRequest, NotFound, Unauthorized
from edge_node.routes.common import edge_state, json_response

_MAX_USER_ID = 128


async def delete_user(request: Request) -> Response:
    state = edge_state(request)
    _check_server_key(request, state.settings.api_keys)
    user_id = request.path_params["user_id"]
    if not 1 <= len(user_id) <= _MAX_USER_ID or any(ord(c) < 32 or ord(c) == 127 for c in user_id):
        raise BadRequest(
            "user_id must be 1-128 characters without control characters",
            code="bad_parameter",
            field="user_id",
        )
    users = state.users
    if users is None:
        raise NotFound("this edge keeps no user state", code="users_disabled")
    erased = await users.erase(user_id, region=state.settings.region)
    return json_response(
        {"user_id": erased.user_id, "sessions": erased.sessions, "recorded": erased.recorded}
    )


def _check_server_key(request: Request, keys: tuple[str, ...]) -> None:
    given = request.headers.get("x-proxima-key", "")
    if not given:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
    if not keys:
        raise Unauthorized(
            "erasing a user needs a server API key, and this edge has none configured",
            code="no_api_keys",
        )
    if not given or not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise Unauthorized("a valid server API key is required", code="bad_api_key")
