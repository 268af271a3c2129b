"""Helpers shared by the routes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from edge_node.state import EdgeState


def edge_state(connection: HTTPConnection) -> EdgeState:
    state: EdgeState = connection.app.state.edge
    return state


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
