"""``GET /v1/items/{item_id}/similar?k=&session_id=&slot=&ctx.<key>=``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from edge_node import params
from edge_node.errors import BadRequest
from edge_node.routes.common import edge_state, json_response
from edge_node.similar import SimilarQuery, similar
from protocol.catalog import ITEM_ID_PATTERN


async def get_similar(request: Request) -> Response:
    state = edge_state(request)
    item_id = request.path_params["item_id"]
    if not ITEM_ID_PATTERN.fullmatch(item_id):
        raise BadRequest(
            "the item id must be 1-128 characters of A-Z a-z 0-9 _ -",
            code="bad_parameter",
            field="item_id",
        )
    query_params = request.query_params
    session = params.session_id(query_params) if "session_id" in query_params else None
    query = SimilarQuery(
        item_id=item_id,
        k=params.k(query_params, state.settings.default_k),
        session_id=session,
        slot=params.slot(query_params),
        context=params.context(query_params),
    )
    return json_response(await similar(state.recommender, query))
