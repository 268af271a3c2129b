"""Errors of the central catalog service, each answered with its status and stable code.

The subtree of :class:`central.errors.CentralError` (drawn whole in :mod:`protocol.errors`)::

    CentralError
    └── CatalogServiceError       500  central.catalog.errors
        ├── CatalogAuthError      401  the bearer token is missing or wrong
        ├── WebhookSignatureError 401  a webhook's signature or timestamp does not check
        ├── CatalogBodyError      400  the body is not JSON or NDJSON of changes
        ├── ItemNotFoundError     404  a change names an item the catalog does not hold
        ├── CatalogConflictError  409  an item kept changing under the write
        ├── BodyTooLargeError     413  the body is larger than the limit
        ├── CatalogMediaTypeError 415  the body is neither JSON nor NDJSON
        └── CatalogUnavailableError 503  the catalog bucket cannot be reached
"""

from __future__ import annotations

from central.errors import CentralError


class CatalogServiceError(CentralError):
    code = "catalog_error"
    status = 500


class CatalogAuthError(CatalogServiceError):
    code = "unauthorized"
    status = 401


class WebhookSignatureError(CatalogServiceError):
    code = "bad_signature"
    status = 401


class CatalogBodyError(CatalogServiceError):
    code = "bad_body"
    status = 400


class ItemNotFoundError(CatalogServiceError):
    code = "item_not_found"
    status = 404


class CatalogConflictError(CatalogServiceError):
    code = "write_conflict"
    status = 409


class BodyTooLargeError(CatalogServiceError):
    code = "body_too_large"
    status = 413


class CatalogMediaTypeError(CatalogServiceError):
    code = "unsupported_media_type"
    status = 415


class CatalogUnavailableError(CatalogServiceError):
    code = "catalog_unavailable"
    status = 503
