"""``GET /v1/recommendations?session_id=&k=&slot=&ctx.<key>=``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from edge_node import params
from edge_node.errors import RateLimited
from edge_node.recommend import Query
from edge_node.routes.common import edge_state, json_response


async def get_recommendations(request: Request) -> Response:
    state = edge_state(request)
    query_params = request.query_params
    query = Query(
        session_id=params.session_id(query_params),
        k=params.k(query_params, state.settings.default_k),
        slot=params.slot(query_params),
        context=params.context(query_params),
    )
    wait = state.session_buckets.take(query.session_id)
    if wait:
        state.metrics.rejected.labels("session_rate").inc()
        raise RateLimited("this session is over its rate limit", retry_after_s=wait)
    return json_response(await state.recommender.answer(query))
