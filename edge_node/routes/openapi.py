"""``GET /openapi.json``: the schema of the edge API, kept beside the routes it describes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from edge_node.routes.common import json_response
from protocol.events import EVENT_TYPES, MAX_BATCH_EVENTS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error_responses(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Malformed input",
        401: "Missing or wrong API key",
        403: "Site key used from an origin it is not bound to",
        413: "Body too large",
        415: "Unsupported content type",
        429: "Rate limited (Retry-After)",
        503: "Overloaded or not ready (Retry-After)",
    }
    return {
        str(s): {"description": text[s], "content": {"application/json": {"schema": _ERROR}}}
        for s in statuses
    }


def _query(
    name: str, schema: dict[str, Any], required: bool = False, description: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


SESSION = _query("session_id", {"type": "string", "minLength": 1, "maxLength": 128}, True)
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "session_id", "type", "ts"],
    "additionalProperties": False,
    "properties": {
        "event_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"},
        "session_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "user_id": {"type": "string", "maxLength": 128},
        "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "item_id": {"type": "string", "maxLength": 128},
        "items": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
        "request_id": {"type": "string", "maxLength": 128},
        "query": {"type": "string", "maxLength": 256},
        "category": {"type": "string", "maxLength": 128},
        "price": {"type": "number", "minimum": 0},
        "ts": {"type": "integer", "minimum": 0},
        "context": {"type": "object", "maxProperties": 16},
    },
}

SCHEMA: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Proxima edge API", "version": "1"},
    "paths": {
        "/v1/events": {
            "post": {
                "summary": "Accept one event or a batch (JSON or msgpack)",
                "description": "When the edge has ingest keys, every post presents one: a "
                "secret server key in X-Proxima-Key (or Authorization: Bearer), or a "
                "publishable site key in X-Proxima-Key or the key query parameter, accepted "
                "only with an Origin it is bound to. No key: 401 missing_api_key; unknown key: "
                "401 bad_api_key; site key from another origin: 403 origin_not_allowed. Each "
                "event costs one token of the client address's rate limit.",
                "parameters": [
                    {
                        "name": "X-Proxima-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "a secret server key or a publishable site key",
                    },
                    _query(
                        "key",
                        {"type": "string"},
                        description="a publishable site key (never a secret key)",
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    EVENT_SCHEMA,
                                    {
                                        "type": "array",
                                        "maxItems": MAX_BATCH_EVENTS,
                                        "items": EVENT_SCHEMA,
                                    },
                                ]
                            }
                        },
                        "application/msgpack": {
                            "schema": {"description": "the same, msgpack-encoded"}
                        },
                    },
                },
                "responses": {
                    "202": {
                        "description": "Counts of accepted, duplicate and rejected events",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Accepted"}
                            }
                        },
                    },
                    **_error_responses(400, 401, 403, 413, 415, 429, 503),
                },
            }
        },
        "/v1/recommendations": {
            "get": {
                "summary": "Ranked items for a session",
                "parameters": [
                    SESSION,
                    _query("k", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query("slot", {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}),
                    _query(
                        "ctx.*",
                        {"type": "string", "maxLength": 256},
                        description="request context, ≤ 16 keys",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "Recommendations",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Recommendations"}
                            }
                        },
                    },
                    **_error_responses(400, 429, 503),
                },
            }
        },
        "/v1/items/{item_id}/similar": {
            "get": {
                "summary": "Items similar to one item (co-visitation, then catalog content)",
                "description": "Unavailable, out-of-stock and deleted items are never listed; "
                "the rules apply, with the session's window when session_id is given. Each item "
                "says why it is there: reason covisitation, content or rules.",
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
                    },
                    _query("k", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query("session_id", {"type": "string", "minLength": 1, "maxLength": 128}),
                    _query("slot", {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}),
                ],
                "responses": {
                    "200": {"description": "Similar items, best first"},
                    "404": {
                        "description": "The item is unknown here (item_not_found)",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                    **_error_responses(400, 429, 503),
                },
            }
        },
        "/v1/users/{user_id}": {
            "delete": {
                "summary": "Erase a user: recent items in Redis and here, their sessions' windows",
                "description": "Needs a secret server key (X-Proxima-Key or Authorization: "
                "Bearer). Records the erasure in the proxima-erasures bucket for the trainer.",
                "parameters": [
                    {
                        "name": "user_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    }
                ],
                "responses": {
                    "200": {"description": "Erased (sessions and whether it was recorded)"},
                    **_error_responses(400, 401, 503),
                },
            }
        },
        "/v1/stream": {
            "get": {
                "summary": "WebSocket: fresh recommendations after each event of the session",
                "parameters": [SESSION],
                "responses": {"101": {"description": "Switching protocols"}},
            }
        },
        "/v1/model": {
            "get": {
                "summary": "Loaded bundle, rollout state, this session's variant",
                "parameters": [{**SESSION, "required": False}],
                "responses": {"200": {"description": "Model state"}},
            }
        },
        "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {
            "get": {
                "summary": "Ready: a verified bundle is loaded",
                "responses": {"200": {"description": "ready"}, **_error_responses(503)},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "schema"}}}
        },
        "/sdk/v1/proxima.js": {
            "get": {
                "summary": "The browser snippet (docs/snippet.md); immutable, ETag, 304",
                "responses": {
                    "200": {"description": "JavaScript", "content": {"text/javascript": {}}},
                    "304": {"description": "Not modified (If-None-Match)"},
                },
            }
        },
        **{
            path: {
                "get": {
                    "summary": f"Demo storefront file ({media}); only with storefront_dir set",
                    "responses": {
                        "200": {"description": media, "content": {media: {}}},
                        "304": {"description": "Not modified (If-None-Match)"},
                        "404": {"description": "the storefront is off (storefront_dir unset)"},
                    },
                }
            }
            for path, media in (
                ("/demo/", "text/html"),
                ("/demo/storefront.css", "text/css"),
                ("/demo/storefront.js", "text/javascript"),
            )
        },
        "/demo/items.json": {
            "get": {
                "summary": "Category and price of the demo storefront's items",
                "parameters": [
                    _query(
                        "ids",
                        {"type": "string"},
                        True,
                        "comma-separated item ids, at most 100; unknown ids are left out",
                    )
                ],
                "responses": {
                    "200": {
                        "description": "Items of the loaded bundle",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/DemoItems"}
                            }
                        },
                    },
                    **_error_responses(400, 503),
                    "404": {"description": "the storefront is off (storefront_dir unset)"},
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                        },
                    }
                },
            },
            "Accepted": {
                "type": "object",
                "properties": {
                    "accepted": {"type": "integer"},
                    "duplicate": {"type": "integer"},
                    "rejected": {"type": "integer"},
                    "rejections": {"type": "array", "items": {"type": "object"}},
                },
            },
            "DemoItems": {
                "type": "object",
                "properties": {
                    "model_version": {"type": "integer"},
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "item_id": {"type": "string"},
                                "category": {"type": ["string", "null"]},
                                "price": {"type": ["number", "null"]},
                            },
                        },
                    },
                },
            },
            "Recommendations": {
                "type": "object",
                "required": ["request_id", "model_version", "items"],
                "properties": {
                    "request_id": {
                        "type": "string",
                        "description": "Signed by this edge for this session, variant and "
                        "bundle; send it back on impression and click events of the same "
                        "session (others are kept but not counted toward CTR).",
                    },
                    "session_id": {"type": "string"},
                    "model_version": {"type": "integer"},
                    "variant": {
                        "type": "string",
                        "enum": ["stable", "canary", "holdout"],
                        "description": "holdout: the non-personalised share lift is "
                        "measured against (popularity, rules and catalog applied).",
                    },
                    "precision": {"type": "string"},
                    "policy": {
                        "type": "string",
                        "description": "The exploration policy of this answer (none: off).",
                    },
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "item_id": {"type": "string"},
                                "score": {"type": "number"},
                                "position": {"type": "integer", "minimum": 0},
                                "propensity": {
                                    "type": "number",
                                    "description": "The probability this item had of being "
                                    "shown in this answer under the exploration policy.",
                                },
                            },
                        },
                    },
                    "rules": {"type": "array", "items": {"type": "string"}},
                    "offers": {"type": "array", "items": {"type": "object"}},
                    "cold": {"type": "boolean"},
                    "stale": {"type": "boolean"},
                },
            },
        }
    },
}


async def openapi(request: Request) -> Response:
    return json_response(SCHEMA)
