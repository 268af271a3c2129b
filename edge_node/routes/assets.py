"""Browser-facing files: the ``proxima.js`` snippet and, when asked for, the demo storefront.

``GET /sdk/v1/proxima.js`` is the snippet a page owner adds with one script tag
(docs/snippet.md); it is part of the product and ships in ``edge_node/static``. The path is
versioned, so the file is cached for a year as immutable; a change a cached page must not
miss ships under a new path.

The demo storefront (``GET /demo/``) is a read-only page built on the snippet. It is not
part of the product: its files live in ``devtools/storefront`` and an edge serves them only
when the ``storefront_dir`` setting names that directory (:class:`Storefront`, loaded at
start-up); otherwise ``/demo/`` answers 404 saying how to switch it on. Its files are
revalidated on every load.

Every file answers with a strong ``ETag`` and a ``304`` to a matching ``If-None-Match``.
``GET /demo/items.json?ids=`` gives the storefront the category and price the loaded
bundle holds for the items it shows.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from edge_node.errors import BadRequest, NotFound, NotReady
from edge_node.routes.common import edge_state, json_response
from runtime.settings import SettingsError

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
SNIPPET_PATH: Final = "/sdk/v1/proxima.js"
MAX_ITEM_IDS: Final = 100

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
_DEMO_CSP: Final = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    cache_control: str
    etag: str
    extra_headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(
        cls,
        path: Path,
        media_type: str,
        cache_control: str,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> Asset:
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, media_type, cache_control, etag, extra_headers)

    def headers(self) -> dict[str, str]:
        return {
            "etag": self.etag,
            "cache-control": self.cache_control,
            "x-content-type-options": "nosniff",
            **dict(self.extra_headers),
        }

    def response(self, request: Request) -> Response:
        if etag_matches(request.headers.get("if-none-match"), self.etag):
            return Response(status_code=304, headers=self.headers())
        return Response(self.body, media_type=self.media_type, headers=self.headers())


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` uses the weak comparison: ``W/"x"`` matches ``"x"``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


_JS: Final = "text/javascript; charset=utf-8"
_CSS: Final = "text/css; charset=utf-8"
_HTML: Final = "text/html; charset=utf-8"
# A page on another origin may load the snippet with integrity= and crossorigin=.
SNIPPET: Final = Asset.load(
    STATIC_DIR / "proxima.js",
    _JS,
    IMMUTABLE,
    (("access-control-allow-origin", "*"), ("cross-origin-resource-policy", "cross-origin")),
)
_DEMO_PAGE_HEADERS: Final = (
    ("content-security-policy", _DEMO_CSP),
    ("referrer-policy", "same-origin"),
)
# URL path -> (file in the storefront directory, media type, extra headers)
STOREFRONT_FILES: Final = {
    "/demo/": ("index.html", _HTML, _DEMO_PAGE_HEADERS),
    "/demo/storefront.css": ("storefront.css", _CSS, ()),
    "/demo/storefront.js": ("storefront.js", _JS, ()),
}
STOREFRONT_OFF: Final = (
    "the demo storefront is off: start the edge with --storefront-dir DIR "
    "(setting storefront_dir; the files are in devtools/storefront)"
)


@dataclass(frozen=True, slots=True)
class Storefront:
    """The demo storefront's files, read once from ``storefront_dir`` at start-up."""

    directory: Path
    files: dict[str, Asset]

    @classmethod
    def load(cls, directory: Path) -> Storefront:
        """Raises :class:`SettingsError` when a file of the storefront cannot be read."""
        files: dict[str, Asset] = {}
        for path, (name, media_type, headers) in STOREFRONT_FILES.items():
            try:
                files[path] = Asset.load(directory / name, media_type, REVALIDATE, headers)
            except OSError as exc:
                raise SettingsError(
                    f"storefront_dir {directory}: cannot read {name}: {exc.strerror} "
                    "(the demo storefront is devtools/storefront)",
                    field="storefront_dir",
                ) from exc
        return cls(directory, files)


async def snippet(request: Request) -> Response:
    return SNIPPET.response(request)


async def demo_file(request: Request) -> Response:
    return _storefront(request).files[request.url.path].response(request)


async def demo_items(request: Request) -> Response:
    """Category and price of up to 100 items of the loaded bundle; unknown ids are left out."""
    _storefront(request)
    raw = request.query_params.get("ids", "")
    ids = [item for item in raw.split(",") if item]
    if not ids:
        raise BadRequest(
            "ids is required: comma-separated item ids", code="missing_parameter", field="ids"
        )
    if len(ids) > MAX_ITEM_IDS or any(len(item) > 128 for item in ids):
        raise BadRequest(
            f"ids holds at most {MAX_ITEM_IDS} item ids of at most 128 characters",
            code="bad_parameter",
            field="ids",
        )
    model = edge_state(request).models.current
    if model is None:
        raise NotReady("no verified bundle is loaded yet", retry_after_s=1)
    tables = model.tables
    items: list[dict[str, Any]] = []
    for item_id in dict.fromkeys(ids):
        index = tables.item_index.get(item_id)
        if index is None:
            continue
        code = int(tables.category[index])
        price = float(tables.price[index])
        items.append(
            {
                "item_id": item_id,
                "category": tables.categories[code] if 0 <= code < len(tables.categories) else None,
                "price": round(price, 2) if math.isfinite(price) else None,
            }
        )
    return json_response(
        {"model_version": model.version, "items": items},
        headers={"cache-control": "no-cache"},
    )


def _storefront(request: Request) -> Storefront:
    storefront: Storefront | None = getattr(request.app.state, "storefront", None)
    if storefront is None:
        raise NotFound(STOREFRONT_OFF)
    return storefront
