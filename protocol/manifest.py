"""The bundle manifest: the signed description of what a model bundle holds.

A manifest names the bundle's format and version, when and with which key it was made,
the sha256 and size of every part, the ranker's parts and precision, and the offline
metrics, config and training summary the trainer recorded. :class:`Manifest` turns it to
and from canonical JSON (the exact bytes that are signed) and validates every field, so a
reader and a builder refuse the same things. The archive around it is
:mod:`protocol.bundle`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from protocol.errors import ManifestError

FORMAT: Final = "proxima-bundle/1"
MAX_MANIFEST_BYTES: Final = 1024 * 1024
MAX_PARTS: Final = 1000
INT64_MAX: Final = 2**63 - 1
RANKER_PRECISIONS: Final = frozenset({"int8", "fp32"})

_MANIFEST_FIELDS: Final = (
    "format",
    "version",
    "created_at",
    "key_id",
    "feature_schema_version",
    "parts",
    "ranker",
    "metrics",
    "rules_version",
    "config",
    "training",
)
_RANKER_PART_KEYS: Final = ("serve", "fp32", "int8")
_PART_NAME: Final = re.compile(r"[A-Za-z0-9._/-]{1,100}")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_KEY_ID_HEX: Final = re.compile(r"[0-9a-f]{16}")
_MAX_JSON_DEPTH: Final = 32
_MAX_SHORT_TEXT: Final = 128


def is_valid_part_name(name: str) -> bool:
    """1-100 characters of ``A-Z a-z 0-9 . _ -``, with ``/`` between non-empty folders."""
    if not _PART_NAME.fullmatch(name) or ".." in name:
        return False
    return all(segment not in ("", ".") for segment in name.split("/"))


def is_valid_key_id(value: object) -> bool:
    """A key id as :func:`protocol.keys.key_id` makes it: 16 lowercase hex characters."""
    return isinstance(value, str) and _KEY_ID_HEX.fullmatch(value) is not None


def format_timestamp(moment: datetime) -> str:
    """``created_at`` form: ISO-8601 in UTC to the second, e.g. ``2025-01-31T12:00:00Z``."""
    if moment.utcoffset() is None:
        raise ManifestError("created_at must be timezone-aware", field="created_at")
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PartInfo:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds and how it was made; the signed half of a bundle."""

    format: str
    version: int
    created_at: str
    key_id: str
    feature_schema_version: int
    parts: dict[str, PartInfo]
    ranker: dict[str, Any]
    metrics: dict[str, Any]
    rules_version: str | None
    config: dict[str, Any]
    training: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "version": self.version,
            "created_at": self.created_at,
            "key_id": self.key_id,
            "feature_schema_version": self.feature_schema_version,
            "parts": {
                name: {"sha256": info.sha256, "size": info.size}
                for name, info in self.parts.items()
            },
            "ranker": self.ranker,
            "metrics": self.metrics,
            "rules_version": self.rules_version,
            "config": self.config,
            "training": self.training,
        }

    def to_json_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, UTF-8): the exact bytes that are signed."""
        return json.dumps(
            self.to_dict(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Manifest:
        """Parses and validates ``manifest.json``; ManifestError names the bad field."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest.json is {len(data)} bytes, over {MAX_MANIFEST_BYTES}",
                code="manifest_too_large",
            )
        try:
            decoded = json.loads(
                data.decode("utf-8"),
                object_pairs_hook=_object_without_duplicate_keys,
                parse_constant=_reject_json_constant,
            )
        except UnicodeDecodeError as exc:
            raise ManifestError("manifest.json is not valid UTF-8") from exc
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest.json is not valid JSON: {exc}") from exc
        return cls.from_dict(decoded)

    @classmethod
    def from_dict(cls, raw: object) -> Manifest:
        """Validates a decoded manifest; nested values are copied, never shared."""
        if not isinstance(raw, Mapping):
            raise ManifestError("the manifest must be a JSON object")
        if "format" not in raw:
            raise ManifestError("format is required", code="missing_field", field="format")
        if raw["format"] != FORMAT:
            raise ManifestError(
                f"unsupported bundle format {str(raw['format'])[:64]!r}; "
                f"this reader understands {FORMAT!r}",
                code="unsupported_format",
                field="format",
            )
        unknown = sorted(str(key)[:64] for key in raw if key not in _MANIFEST_FIELDS)
        if unknown:
            raise ManifestError(
                f"unknown field {unknown[0]!r}", code="unknown_field", field=unknown[0]
            )
        for name in _MANIFEST_FIELDS:
            if name not in raw:
                raise ManifestError(f"{name} is required", code="missing_field", field=name)
        parts = _parts(raw["parts"])
        return cls(
            format=FORMAT,
            version=_bounded_int(raw["version"], "version", minimum=1),
            created_at=_created_at(raw["created_at"]),
            key_id=_key_id(raw["key_id"]),
            feature_schema_version=_bounded_int(
                raw["feature_schema_version"], "feature_schema_version", minimum=1
            ),
            parts=parts,
            ranker=_ranker(raw["ranker"], parts),
            metrics=_json_object(raw["metrics"], "metrics"),
            rules_version=_rules_version(raw["rules_version"]),
            config=_json_object(raw["config"], "config"),
            training=_json_object(raw["training"], "training"),
        )


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ManifestError(f"key {key[:64]!r} appears twice in one object", field=key[:64])
        obj[key] = value
    return obj


def _reject_json_constant(name: str) -> None:
    raise ManifestError(f"{name} is not a JSON number")


def _bounded_int(value: object, field: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{field} must be an integer", field=field)
    if not minimum <= value <= INT64_MAX:
        raise ManifestError(f"{field} must be between {minimum} and 2**63-1", field=field)
    return int(value)


def _created_at(value: object) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise ManifestError("created_at must be an ISO-8601 string", field="created_at")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ManifestError(
            f"created_at {value!r} is not an ISO-8601 time", field="created_at"
        ) from exc
    if moment.utcoffset() != timedelta(0):
        raise ManifestError("created_at must be in UTC", field="created_at")
    return value


def _key_id(value: object) -> str:
    if not isinstance(value, str) or not is_valid_key_id(value):
        raise ManifestError("key_id must be 16 lowercase hex characters", field="key_id")
    return value


def _rules_version(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= _MAX_SHORT_TEXT:
        raise ManifestError(
            f"rules_version must be null or a string of 1-{_MAX_SHORT_TEXT} characters",
            field="rules_version",
        )
    if not value.isprintable():
        raise ManifestError("rules_version must be printable", field="rules_version")
    return value


def _parts(value: object) -> dict[str, PartInfo]:
    if not isinstance(value, Mapping):
        raise ManifestError("parts must be an object of name -> {sha256, size}", field="parts")
    if len(value) > MAX_PARTS:
        raise ManifestError(f"parts holds more than {MAX_PARTS} entries", field="parts")
    parts: dict[str, PartInfo] = {}
    for name, info in value.items():
        if not isinstance(name, str) or not is_valid_part_name(name):
            raise ManifestError(
                f"parts: {str(name)[:120]!r} is not a valid part name (1-100 characters of "
                "A-Z a-z 0-9 . _ - with / between folders, no '..')",
                field="parts",
            )
        field = f"parts.{name}"
        if not isinstance(info, Mapping) or set(info) != {"sha256", "size"}:
            raise ManifestError(f"{field} must be an object of sha256 and size", field=field)
        sha256 = info["sha256"]
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise ManifestError(
                f"{field}.sha256 must be 64 lowercase hex characters", field=f"{field}.sha256"
            )
        parts[name] = PartInfo(sha256, _bounded_int(info["size"], f"{field}.size", minimum=0))
    return parts


def _ranker(value: object, parts: Mapping[str, PartInfo]) -> dict[str, Any]:
    ranker = _json_object(value, "ranker")
    for key in _RANKER_PART_KEYS:
        reference = ranker.get(key)
        if reference is not None and reference not in parts:
            raise ManifestError(
                f"ranker.{key} must be null or the name of a part, got {str(reference)[:120]!r}",
                field=f"ranker.{key}",
            )
    precision = ranker.get("precision")
    if precision is not None and precision not in RANKER_PRECISIONS:
        raise ManifestError(
            f"ranker.precision must be one of {sorted(RANKER_PRECISIONS)}",
            field="ranker.precision",
        )
    operators = ranker.get("quantized_operators")
    if operators is not None and (
        not isinstance(operators, list) or not all(isinstance(op, str) for op in operators)
    ):
        raise ManifestError(
            "ranker.quantized_operators must be a list of operator names",
            field="ranker.quantized_operators",
        )
    return ranker


def _json_object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestError(f"{field} must be an object", field=field)
    copied: dict[str, Any] = _json_copy(value, field, depth=0)
    return copied


def _json_copy(value: object, path: str, *, depth: int) -> Any:
    """A JSON-only deep copy; rejects what canonical JSON cannot carry, naming where."""
    if depth > _MAX_JSON_DEPTH:
        raise ManifestError(f"{path} is nested more than {_MAX_JSON_DEPTH} deep", field=path)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _require_utf8(value, path)
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"{path} must be a finite number, got {value!r}", field=path)
        return float(value)
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{path} has a non-string key {key!r}", field=path)
            _require_utf8(key, path)
            copied[key] = _json_copy(item, f"{path}.{key}", depth=depth + 1)
        return copied
    if isinstance(value, list | tuple):
        return [
            _json_copy(item, f"{path}[{index}]", depth=depth + 1)
            for index, item in enumerate(value)
        ]
    raise ManifestError(f"{path} is a {type(value).__name__}, which JSON cannot carry", field=path)


def _require_utf8(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ManifestError(f"{path} holds text that is not valid Unicode", field=path) from exc
