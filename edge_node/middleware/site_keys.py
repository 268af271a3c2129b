"""Who may post events: secret server keys, and publishable site keys bound to origins.

Two kinds of ingest key, both checked the same way for JSON and msgpack bodies:

* **secret keys** (``api_keys``) belong to servers; they are presented in the
  ``X-Proxima-Key`` header (or ``Authorization: Bearer``), never in a URL, and are accepted
  from anywhere;
* **site keys** (``site_keys``, entries ``KEY=ORIGIN``) are published in pages; a browser
  presents one in ``X-Proxima-Key`` or, where it cannot set headers (``sendBeacon``, a
  ``text/plain`` post that needs no preflight), as the ``key`` query parameter. A site key
  is accepted only from a request whose ``Origin`` header is one it is bound to.

Rotation: list the new key beside the old one (both are valid), move the pages over, then
remove the old one. When neither setting names a key, ingestion is open (development).
No key → 401 ``missing_api_key``; an unknown key → 401 ``bad_api_key``; a site key from
an origin it is not bound to, or with no ``Origin`` at all → 403 ``origin_not_allowed``.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from edge_node.errors import EdgeError, SettingsError, Unauthorized

KEY_HEADER: Final = "x-proxima-key"
KEY_QUERY: Final = "key"
_MAX_KEY_CHARS: Final = 256


class OriginNotAllowed(EdgeError):
    """A site key presented from a page of an origin it is not bound to."""

    status = 403
    code = "origin_not_allowed"


@dataclass(frozen=True, slots=True)
class IngestKeys:
    secret_keys: tuple[str, ...]
    site_origins: Mapping[str, frozenset[str]]  # site key -> the origins it may come from

    @property
    def required(self) -> bool:
        return bool(self.secret_keys or self.site_origins)

    @property
    def origins(self) -> frozenset[str]:
        """Every origin some site key is bound to (what CORS must allow)."""
        return frozenset(o for origins in self.site_origins.values() for o in origins)

    def check(self, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        """Raises :class:`Unauthorized` or :class:`OriginNotAllowed`; returns when allowed."""
        if not self.required:
            return
        presented = headers.get(KEY_HEADER)
        authorization = headers.get("authorization", "")
        if presented is None and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        from_query = presented is None
        if from_query:
            presented = query.get(KEY_QUERY)
        if presented is None:
            raise Unauthorized(
                "events need an ingest key: a site key (X-Proxima-Key or ?key=) from pages, "
                "a secret key (X-Proxima-Key) from servers",
                code="missing_api_key",
            )
        if not from_query and _matches(presented, self.secret_keys):
            return
        for key, origins in self.site_origins.items():
            if hmac.compare_digest(presented.encode(), key.encode()):
                origin = headers.get("origin")
                if origin is None or origin not in origins:
                    shown = "no Origin" if origin is None else f"origin {origin[:100]!r}"
                    raise OriginNotAllowed(
                        f"this site key is not valid from {shown}", field="origin"
                    )
                return
        raise Unauthorized("ingest key not recognised", code="bad_api_key")


def _matches(presented: str, keys: Iterable[str]) -> bool:
    return any(hmac.compare_digest(presented.encode(), key.encode()) for key in keys)


@functools.lru_cache(maxsize=8)
def ingest_keys(api_keys: tuple[str, ...], site_keys: tuple[str, ...]) -> IngestKeys:
    """The keys of the ``api_keys`` and ``site_keys`` settings; SettingsError when malformed."""
    bound: dict[str, set[str]] = {}
    for entry in site_keys:
        key, sep, origin = entry.partition("=")
        key, origin = key.strip(), origin.strip().rstrip("/")
        if not sep or not key or len(key) > _MAX_KEY_CHARS:
            raise SettingsError(
                "site_keys entries are KEY=ORIGIN, e.g. pk_live_1=https://shop.example",
                field="site_keys",
            )
        if not _is_origin(origin):
            raise SettingsError(
                f"site key origin {origin[:100]!r} is not scheme://host[:port]",
                field="site_keys",
            )
        if key in api_keys:
            raise SettingsError(
                "a key cannot be both a secret key and a site key", field="site_keys"
            )
        bound.setdefault(key, set()).add(origin)
    return IngestKeys(
        secret_keys=tuple(api_keys),
        site_origins={key: frozenset(origins) for key, origins in bound.items()},
    )


def _is_origin(text: str) -> bool:
    parts = urlsplit(text)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not parts.path
        and not parts.query
        and not parts.fragment
        and "@" not in parts.netloc
    )
