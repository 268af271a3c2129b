"""Readers for the leaves of a rules document: each checks one value and names its path.

They turn plain data (as JSON or YAML load it) into checked Python values, or raise a
:class:`RulesError` saying what was found, what is allowed and, for the usual YAML traps
(unquoted numbers, times read as base-60 numbers), how to write it instead.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from edge_node.rules.errors import RulesError
from edge_node.rules.model import (
    BOUND_ITEM,
    MAX_ITEM_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_WITHIN_MS,
    ContextValue,
)

_T = TypeVar("_T")

TOKEN_CHARS: Final = "letters, digits, '.', '_' and '-'"
_TOKEN: Final = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_DURATION: Final = re.compile(r"(?:(\d{1,9})d)?(?:(\d{1,9})h)?(?:(\d{1,9})m)?(?:(\d{1,9})s)?")
_CLOCK: Final = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")
_UNIT_MS: Final = (86_400_000, 3_600_000, 60_000, 1000)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def index(path: str, position: int) -> str:
    return f"{path}[{position}]"


def describe(value: object) -> str:
    """How a found value is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} value"


def mapping(
    value: object,
    path: str,
    what: str,
    allowed: Sequence[str],
    required: Sequence[str] = (),
) -> dict[str, object]:
    """Checks ``value`` is a mapping of text keys, all of them ``allowed``."""
    if not isinstance(value, dict):
        raise RulesError(
            f"{what} must be a mapping with keys {', '.join(allowed)}; found {describe(value)}",
            code="bad_type", path=path,
        )
    for key in value:
        if not isinstance(key, str):
            raise RulesError(
                f"keys must be text; found {describe(key)}", code="bad_type", path=path
            )
        if key not in allowed:
            raise RulesError(
                f"unknown key {key[:64]!r} in {what}{_suggestion(key, allowed)}; "
                f"allowed keys: {', '.join(allowed)}",
                code="unknown_key", path=join(path, key[:64]),
            )
    for key in required:
        if key not in value:
            raise RulesError(f"{what} needs the key {key!r}", code="missing_key", path=path)
    return value


def only_one(body: dict[str, object], keys: Sequence[str], path: str, what: str) -> str:
    """The one of ``keys`` present in ``body``; an error when none or several are."""
    present = [key for key in keys if key in body]
    if not present:
        raise RulesError(
            f"{what} needs one of: {', '.join(keys)}", code="missing_key", path=path
        )
    if len(present) > 1:
        raise RulesError(
            f"{what} takes only one of {', '.join(keys)}; found {' and '.join(present)}",
            code="conflicting_keys", path=path,
        )
    return present[0]


def optional(
    body: dict[str, object], path: str, key: str, read: Callable[[object, str], _T]
) -> _T | None:
    """``read`` applied to ``body[key]`` (with its path) when the key is present."""
    return read(body[key], join(path, key)) if key in body else None


def _suggestion(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def sequence(value: object, path: str, what: str, max_entries: int) -> list[object]:
    """A non-empty list of at most ``max_entries``."""
    if not isinstance(value, list):
        raise RulesError(
            f"{what} must be a list; found {describe(value)}", code="bad_type", path=path
        )
    if not value:
        raise RulesError(f"{what} must not be empty", code="bad_value", path=path)
    if len(value) > max_entries:
        raise RulesError(
            f"{what} holds {len(value)} entries; at most {max_entries} are allowed",
            code="too_many", path=path,
        )
    return value


def unique(values: Sequence[str], path: str) -> None:
    seen: set[str] = set()
    for position, value in enumerate(values):
        if value in seen:
            raise RulesError(
                f"{value[:64]!r} appears more than once", code="bad_value",
                path=index(path, position),
            )
        seen.add(value)


def text(value: object, path: str, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        hint = "; quote it" if is_number else ""
        raise RulesError(
            f"{what} must be text; found {describe(value)}{hint}", code="bad_type", path=path
        )
    if not value:
        raise RulesError(f"{what} must not be empty", code="bad_value", path=path)
    if len(value) > max_chars:
        raise RulesError(
            f"{what} is {len(value)} characters; at most {max_chars} are allowed",
            code="bad_value", path=path,
        )
    return value


def token(value: object, path: str, what: str, max_chars: int = 64) -> str:
    """Text of letters, digits, '.', '_' and '-' only (ids, versions, slots)."""
    checked = text(value, path, what, max_chars)
    if not _TOKEN.fullmatch(checked):
        raise RulesError(
            f"{what} {checked!r} may only hold {TOKEN_CHARS}", code="bad_value", path=path
        )
    return checked


def name(value: object, path: str, what: str) -> str:
    """Free text without control characters (categories, context values)."""
    checked = text(value, path, what, MAX_NAME_CHARS)
    if _CONTROL.search(checked):
        raise RulesError(f"{what} must not contain control characters", code="bad_value", path=path)
    return checked


def category(value: object, path: str) -> str:
    return name(value, path, "a category")


def item_id(value: object, path: str, *, allow_bound: bool) -> str:
    checked = text(value, path, "an item id", MAX_ITEM_ID_CHARS)
    if _CONTROL.search(checked):
        raise RulesError(
            "an item id must not contain control characters", code="bad_value", path=path
        )
    if checked.startswith("$"):
        if checked != BOUND_ITEM:
            raise RulesError(
                f"unknown variable {checked!r}; the only variable is {BOUND_ITEM}",
                code="bad_value", path=path,
            )
        if not allow_bound:
            raise RulesError(
                f"{BOUND_ITEM} can only be used in actions; a condition binds it with "
                "per_item: true", code="bad_value", path=path,
            )
    return checked


def item_ids(value: object, path: str, max_entries: int, *, allow_bound: bool) -> tuple[str, ...]:
    entries = sequence(value, path, "a list of item ids", max_entries)
    ids = [item_id(v, index(path, i), allow_bound=allow_bound) for i, v in enumerate(entries)]
    unique(ids, path)
    return tuple(ids)


def flag(value: object, path: str, what: str) -> bool:
    if not isinstance(value, bool):
        raise RulesError(
            f"{what} must be true or false; found {describe(value)}", code="bad_type", path=path
        )
    return value


def integer(value: object, path: str, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RulesError(
            f"{what} must be a whole number from {low} to {high}; found {describe(value)}",
            code="bad_type", path=path,
        )
    if not low <= value <= high:
        raise RulesError(
            f"{what} must be from {low} to {high}; found {value}", code="bad_value", path=path
        )
    return value


def number(value: object, path: str, what: str, low: float, high: float) -> float:
    """A finite number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RulesError(
            f"{what} must be a number; found {describe(value)}", code="bad_type", path=path
        )
    as_float = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
    if not (math.isfinite(as_float) and low <= as_float <= high):
        raise RulesError(
            f"{what} must be a finite number from {low:g} to {high:g}; found {value!r}",
            code="bad_value", path=path,
        )
    return as_float


def context_value(value: object, path: str) -> ContextValue:
    if value is None:
        raise RulesError(
            "a context value cannot be null; test for absence with exists: false",
            code="bad_value", path=path,
        )
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RulesError("a context value must be finite", code="bad_value", path=path)
        return value
    if isinstance(value, str):
        return name(value, path, "a context value")
    raise RulesError(
        f"a context value must be text, a number or true/false; found {describe(value)}",
        code="bad_type", path=path,
    )


def duration_ms(value: object, path: str) -> int:
    allowed = "a duration like 30s, 10m, 2h or 1h30m"
    if not isinstance(value, str):
        hint = "; give a unit, e.g. 10m" if isinstance(value, int | float) else ""
        raise RulesError(
            f"expected {allowed}; found {describe(value)}{hint}",
            code="bad_duration", path=path,
        )
    match = _DURATION.fullmatch(value.strip())
    if not value.strip() or match is None:
        raise RulesError(
            f"{value[:40]!r} is not {allowed} (units: d, h, m, s, largest first)",
            code="bad_duration", path=path,
        )
    parts = zip(match.groups(), _UNIT_MS, strict=True)
    total = sum(int(part) * unit for part, unit in parts if part)
    if not 0 < total <= MAX_WITHIN_MS:
        raise RulesError(
            f"a duration must be more than 0s and at most {MAX_WITHIN_MS // 86_400_000}d",
            code="bad_duration", path=path,
        )
    return total


def clock_minutes(value: object, path: str, *, allow_midnight_end: bool) -> int:
    """A local time ``HH:MM`` as minutes after midnight (``24:00`` only for a range's end)."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise RulesError(
            f"a time of day must be quoted text like \"18:00\"; found the number {value} "
            "(YAML reads an unquoted 18:00 as the base-60 number 1080)",
            code="bad_time", path=path,
        )
    if not isinstance(value, str) or (match := _CLOCK.fullmatch(value)) is None:
        raise RulesError(
            f"a time of day must be \"HH:MM\" from 00:00 to 23:59; found {describe(value)}",
            code="bad_time", path=path,
        )
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > 24 * 60 or (minutes == 24 * 60 and not allow_midnight_end):
        raise RulesError(
            "a time of day runs from 00:00 to 23:59 (24:00 only as the end of a range)",
            code="bad_time", path=path,
        )
    return minutes
