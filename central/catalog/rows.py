"""Catalog files (CSV or JSONL) into checked items, each bad row reported with its line.

CSV columns are the item's fields (``id``, ``title``, ``category``, ``price``, ``stock``,
``available``, ``deleted``, ``version``, ``created_at``, ``updated_at``) and ``attr.<name>``
for attributes; an empty cell leaves the field out. Cells are typed by their column, an
attribute's by its look (whole number, number, true/false, else text). ``field=value``
pairs of ``proxima catalog set`` are typed the same way.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from protocol.catalog import FIELDS, CatalogError, Item, validate_item

ATTRIBUTE_PREFIX: Final = "attr."
_INTEGER_FIELDS: Final = frozenset({"stock", "version", "created_at", "updated_at"})
_FLAG_FIELDS: Final = frozenset({"available", "deleted"})
_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    error: CatalogError

    def describe(self) -> str:
        where = f" ({self.error.field})" if self.error.field else ""
        return f"line {self.line}: {self.error.message}{where} [{self.error.code}]"


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    item: Item | None
    bad: BadRow | None


def read_rows(path: Path) -> Iterator[Row]:
    """Every row of a ``.csv`` or ``.jsonl``/``.ndjson`` file, checked."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(text)
    else:
        yield from _json_rows(text.splitlines())


def _csv_rows(text: str) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(text))
    for record in reader:
        line = reader.line_num
        try:
            yield Row(line, validate_item(typed_fields(record.items())), None)
        except CatalogError as exc:
            yield Row(line, None, BadRow(line, exc))


def _json_rows(lines: Iterable[str]) -> Iterator[Row]:
    for line, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            try:
                raw = json.loads(text)
            except ValueError as exc:
                raise CatalogError("the line is not valid JSON", code="bad_json") from exc
            yield Row(line, validate_item(raw), None)
        except CatalogError as exc:
            yield Row(line, None, BadRow(line, exc))


def typed_fields(pairs: Iterable[tuple[str | None, Any]]) -> dict[str, Any]:
    """Text cells (or ``field=value`` pairs) typed by their field; empty ones left out."""
    out: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for name, value in pairs:
        if name is None:
            raise CatalogError("the row has more cells than columns", code="bad_row")
        if value is None or value == "":
            continue
        name = name.strip()
        if name.startswith(ATTRIBUTE_PREFIX):
            attributes[name[len(ATTRIBUTE_PREFIX) :]] = _guess(value)
        elif name not in FIELDS:
            raise CatalogError(f"unknown field {name[:64]!r}", code="unknown_field", field=name)
        else:
            out[name] = _typed(name, value)
    if attributes:
        out["attributes"] = attributes
    return out


def _typed(name: str, value: str) -> Any:
    if name == "price":
        try:
            return float(value)
        except ValueError:
            return value  # refused by the contract as a wrong type
    if name in _INTEGER_FIELDS:
        return int(value) if value.strip().lstrip("-").isdigit() else value
    if name in _FLAG_FIELDS:
        lowered = value.strip().lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else value
    return value


def _guess(value: str) -> Any:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
