"""The catalog contract: one item of the shop, as the feed sends it and the KV holds it.

``validate_item`` turns an untrusted mapping (a JSON object, a CSV row already typed) into
an :class:`Item` or raises :class:`CatalogError` naming the field and the rule it broke;
``validate_patch`` does the same for the fields of a partial update. ``encode_item`` and
``decode_item`` are the KV value's codec (compact JSON with sorted keys, so equal items
encode to equal bytes). ``Item.supersedes`` is the one ordering rule: a higher ``version``
wins, an equal version with a later ``updated_at`` wins, anything else is stale.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from protocol.errors import ProtocolError

ITEM_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
ATTRIBUTE_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TITLE_CHARS: Final = 512
MAX_CATEGORY_CHARS: Final = 128
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_CHARS: Final = 256
MAX_ITEM_BYTES: Final = 16 * 1024
MAX_VERSION: Final = 2**53  # exact in a JSON number
MAX_TS_MS: Final = 10**13
MAX_STOCK: Final = 2**53

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")

AttributeValue = str | int | float | bool

FIELDS: Final = frozenset(
    {
        "id",
        "title",
        "category",
        "price",
        "stock",
        "available",
        "attributes",
        "created_at",
        "updated_at",
        "deleted",
        "version",
    }
)
PATCHABLE: Final = FIELDS - {"id", "created_at"}


class CatalogError(ProtocolError):
    """An item or a catalog change breaks the catalog contract."""

    code = "invalid_item"
    status = 400


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    title: str | None = None
    category: str | None = None
    price: float | None = None
    stock: int | None = None  # None: stock is not tracked
    available: bool = True
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict, hash=False)
    created_at: int | None = None
    updated_at: int | None = None
    deleted: bool = False
    version: int | None = None  # assigned centrally when the feed leaves it out

    @property
    def servable(self) -> bool:
        """Whether the item may appear in an answer at all."""
        return self.available and not self.deleted and (self.stock is None or self.stock > 0)

    def supersedes(self, other: Item) -> bool:
        """Whether this item is a newer state than ``other`` (of the same id)."""
        mine, theirs = self.version or 0, other.version or 0
        if mine != theirs:
            return mine > theirs
        return (self.updated_at or 0) > (other.updated_at or 0)

    def same_content(self, other: Item) -> bool:
        """Equal but for version and timestamps: writing it again changes nothing."""
        stamp = {"version": None, "updated_at": None, "created_at": None}
        return replace(self, **stamp) == replace(other, **stamp)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "available": self.available}
        for name in ("title", "category", "price", "stock", "created_at", "updated_at", "version"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.deleted:
            out["deleted"] = True
        return out


def validate_item(raw: object) -> Item:
    """Checks one whole item; unknown fields and wrong types are errors."""
    if not isinstance(raw, Mapping):
        raise CatalogError("an item must be an object", code="not_an_object")
    _known_fields(raw, FIELDS)
    if "id" not in raw or raw["id"] is None:
        raise CatalogError("id is required", code="missing_field", field="id")
    checked = _checked_fields(raw)
    return Item(**checked)


def validate_patch(raw: object) -> dict[str, Any]:
    """Checks the fields of a partial update (``id`` included, to say which item)."""
    if not isinstance(raw, Mapping):
        raise CatalogError("a change must be an object", code="not_an_object")
    _known_fields(raw, PATCHABLE | {"id"})
    if "id" not in raw or raw["id"] is None:
        raise CatalogError("id is required", code="missing_field", field="id")
    return _checked_fields(raw)


def check_item_id(value: object, name: str = "id") -> str:
    if not isinstance(value, str):
        raise CatalogError(f"{name} must be a string", code="wrong_type", field=name)
    if not ITEM_ID_PATTERN.fullmatch(value):
        raise CatalogError(
            f"{name} must be 1-128 characters of A-Z a-z 0-9 _ -", code="bad_item_id", field=name
        )
    return value


def apply_patch(item: Item, patch: Mapping[str, Any]) -> Item:
    """``item`` with the checked fields of ``patch`` (from :func:`validate_patch`) set."""
    changes = {name: value for name, value in patch.items() if name != "id"}
    return replace(item, **changes)


def encode_item(item: Item) -> bytes:
    data = json.dumps(item.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    if len(data) > MAX_ITEM_BYTES:
        raise CatalogError(
            f"the item encodes to {len(data)} bytes; at most {MAX_ITEM_BYTES} are allowed",
            code="item_too_large",
            field="id",
        )
    return data


def decode_item(data: bytes) -> Item:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError("a stored item is not valid JSON", code="bad_encoding") from exc
    return validate_item(raw)


def _known_fields(raw: Mapping[Any, object], allowed: frozenset[str]) -> None:
    for key in raw:
        if key not in allowed:
            name = key if isinstance(key, str) and not _SURROGATE.search(key) else repr(key)
            raise CatalogError(
                f"unknown field {name[:64]!r}", code="unknown_field", field=name[:64]
            )


def _checked_fields(raw: Mapping[str, object]) -> dict[str, Any]:
    readers = {
        "id": check_item_id,
        "title": lambda v, n: _text(v, n, MAX_TITLE_CHARS),
        "category": lambda v, n: _text(v, n, MAX_CATEGORY_CHARS),
        "price": _price,
        "stock": lambda v, n: _integer(v, n, MAX_STOCK),
        "available": _flag,
        "attributes": _attributes,
        "created_at": lambda v, n: _integer(v, n, MAX_TS_MS - 1),
        "updated_at": lambda v, n: _integer(v, n, MAX_TS_MS - 1),
        "deleted": _flag,
        "version": _version,
    }
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None and name not in ("available", "deleted", "attributes"):
            out[name] = None
            continue
        out[name] = readers[name](value, name)
    return out


def _text(value: object, name: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise CatalogError(f"{name} must be a string", code="wrong_type", field=name)
    if not 1 <= len(value) <= max_chars:
        raise CatalogError(
            f"{name} must be 1-{max_chars} characters", code="bad_length", field=name
        )
    if _CONTROL.search(value) or _SURROGATE.search(value):
        raise CatalogError(
            f"{name} must be valid text without control characters", code="bad_chars", field=name
        )
    return value


def _price(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(f"{name} must be a number", code="wrong_type", field=name)
    price = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
    if not math.isfinite(price):
        raise CatalogError(f"{name} must be finite", code="bad_price", field=name)
    if price < 0:
        raise CatalogError(f"{name} must not be negative", code="negative_price", field=name)
    return price


def _integer(value: object, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(f"{name} must be a whole number", code="wrong_type", field=name)
    if not 0 <= value <= high:
        raise CatalogError(f"{name} must be from 0 to {high}", code="out_of_range", field=name)
    return value


def _version(value: object, name: str) -> int:
    version = _integer(value, name, MAX_VERSION)
    if version < 1:
        raise CatalogError(f"{name} must be at least 1", code="out_of_range", field=name)
    return version


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise CatalogError(f"{name} must be true or false", code="wrong_type", field=name)
    return value


def _attributes(value: object, name: str) -> dict[str, AttributeValue]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CatalogError(f"{name} must be an object", code="wrong_type", field=name)
    if len(value) > MAX_ATTRIBUTES:
        raise CatalogError(
            f"{name} holds at most {MAX_ATTRIBUTES} keys", code="too_many_attributes", field=name
        )
    out: dict[str, AttributeValue] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ATTRIBUTE_KEY_PATTERN.fullmatch(key):
            raise CatalogError(
                "attribute names must be 1-64 characters of A-Z a-z 0-9 . _ -",
                code="bad_attribute",
                field=name,
            )
        where = f"{name}.{key}"
        if isinstance(item, str):
            out[key] = _text(item, where, MAX_ATTRIBUTE_CHARS)
        elif isinstance(item, bool):
            out[key] = item
        elif isinstance(item, int):
            if not -MAX_VERSION <= item <= MAX_VERSION:
                raise CatalogError(f"{where} is out of range", code="out_of_range", field=where)
            out[key] = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise CatalogError(f"{where} must be finite", code="bad_attribute", field=where)
            out[key] = item
        else:
            raise CatalogError(
                f"{where} must be a string, number or true/false", code="wrong_type", field=where
            )
    return out
