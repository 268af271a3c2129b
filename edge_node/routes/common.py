"""Helpers shared by the routes."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from edge_node.state import EdgeState


def edge_state(connection: HTTPConnection) -> EdgeState:
    state: EdgeState = connection.app.state.edge
    return state


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
