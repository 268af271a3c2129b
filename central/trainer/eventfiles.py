"""The event store's files: journal records and snapshots.

Journal record
    ``payload length (u32 LE) | crc32 of the payload (u32 LE) | payload``, the payload a
    msgpack map ``{"rows": [[key, session, item, ts, type, category, price], ...],
    "offsets": {"<topic>:<partition>": next offset}, "sequence": events ever kept}``.
    Records are only appended, so a crash can tear only the last one; a record damaged in
    the middle (a bad sector, a stray write) is skipped: :func:`read_journal` scans on to the
    next whole record, logs and counts the bytes it passed over, and stops only before a
    damaged tail that no whole record follows.
Snapshot
    :data:`SNAPSHOT_MAGIC`, the crc32 of the payload (u32 LE), then a msgpack map of the
    vocabularies, the column buffers (:data:`~central.eventlog.COLUMNS`, little-endian),
    ``offsets``, ``sequence`` and ``generation``. Written whole and atomically.

A record or snapshot that passes its checksum but does not hold what this format says was
not torn but written by something else: that raises :class:`~central.errors.DataFormatError`.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np

from central.errors import DataFormatError
from central.eventlog import COLUMNS, EventLog, Row
from protocol.events import EVENT_TYPES

log = logging.getLogger(__name__)

SNAPSHOT_MAGIC: Final = b"PROXIMA-EVENTSTORE-1\n"
_RECORD_HEADER: Final = struct.Struct("<II")
_CRC: Final = struct.Struct("<I")
# Every payload is the map {"rows", "offsets", "sequence"}, packed in that order: the bytes a
# resynchronising scan looks for after damage, before it checks a candidate's checksum.
_PAYLOAD_START: Final = b"\x83\xa4rows"
_FORMAT_ERRORS: Final = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    msgpack.UnpackException,
)


@dataclass(frozen=True, slots=True)
class JournalRecord:
    rows: list[Row]
    offsets: dict[str, int]
    sequence: int
    end: int  # byte offset just past this record
    skipped: int = 0  # damaged bytes passed over just before this record


@dataclass(frozen=True, slots=True)
class Snapshot:
    columns: EventLog
    offsets: dict[str, int]
    sequence: int
    generation: int


def encode_record(rows: list[Row], offsets: Mapping[str, int], sequence: int) -> bytes:
    payload: bytes = msgpack.packb(
        {"rows": [list(row) for row in rows], "offsets": dict(offsets), "sequence": sequence},
        use_bin_type=True,
    )
    return _RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_journal(data: bytes, path: Path) -> Iterator[JournalRecord]:
    """The whole records of ``data``, scanning past damaged ones; stops at a torn tail."""
    position = 0
    skipped = 0
    while position + _RECORD_HEADER.size <= len(data):
        end = _whole_record_end(data, position)
        if end is None:
            following = _next_whole_record(data, position)
            if following is None:
                return  # a torn tail: the caller cuts it
            log.warning(
                "%s: skipped %d damaged bytes at byte %d of the journal",
                path,
                following - position,
                position,
            )
            skipped += following - position
            position = following
            continue
        payload = data[position + _RECORD_HEADER.size : end]
        try:
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            record = JournalRecord(
                rows=[_checked_row(row) for row in raw["rows"]],
                offsets=_checked_offsets(raw["offsets"]),
                sequence=int(raw["sequence"]),
                end=end,
                skipped=skipped,
            )
        except _FORMAT_ERRORS as exc:
            raise DataFormatError(
                f"the journal record at byte {position} is not in this store's format: {exc}",
                path=str(path),
            ) from exc
        position, skipped = end, 0
        yield record


def _whole_record_end(data: bytes, position: int) -> int | None:
    """Where the record at ``position`` ends, if one whole and unbroken starts there."""
    if position + _RECORD_HEADER.size > len(data):
        return None
    length, checksum = _RECORD_HEADER.unpack_from(data, position)
    start = position + _RECORD_HEADER.size
    end = start + int(length)
    if end > len(data) or zlib.crc32(data[start:end]) != checksum:
        return None
    return end


def _next_whole_record(data: bytes, damaged: int) -> int | None:
    """The start of the first whole record after the damaged one at ``damaged``.

    First where the damaged record's own length points (a flipped bit in a payload leaves
    the header right), then at each place a payload's first bytes appear, so the scan stays
    linear in the file rather than checksumming a candidate at every byte.
    """
    length, _ = _RECORD_HEADER.unpack_from(data, damaged)
    declared = damaged + _RECORD_HEADER.size + int(length)
    if declared < len(data) and _whole_record_end(data, declared) is not None:
        return declared
    found = data.find(_PAYLOAD_START, damaged + 1 + _RECORD_HEADER.size)
    while found != -1:
        candidate = found - _RECORD_HEADER.size
        if _whole_record_end(data, candidate) is not None:
            return candidate
        found = data.find(_PAYLOAD_START, found + 1)
    return None


def encode_snapshot(snapshot: Snapshot) -> bytes:
    columns = snapshot.columns
    body: dict[str, Any] = {
        "generation": snapshot.generation,
        "sequence": snapshot.sequence,
        "offsets": dict(snapshot.offsets),
        "session_ids": columns.session_ids,
        "item_ids": columns.item_ids,
        "categories": columns.categories,
    }
    for name, dtype in COLUMNS.items():
        body[name] = getattr(columns, name).astype(_on_disk(dtype), copy=False).tobytes()
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    return SNAPSHOT_MAGIC + _CRC.pack(zlib.crc32(payload)) + payload


def decode_snapshot(data: bytes, path: Path) -> Snapshot:
    header = len(SNAPSHOT_MAGIC) + _CRC.size
    if len(data) < header or not data.startswith(SNAPSHOT_MAGIC):
        raise DataFormatError("not an event store snapshot", path=str(path))
    payload = data[header:]
    if zlib.crc32(payload) != _CRC.unpack_from(data, len(SNAPSHOT_MAGIC))[0]:
        raise DataFormatError("the snapshot is damaged (checksum mismatch)", path=str(path))
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        arrays = {
            name: np.frombuffer(body[name], dtype=_on_disk(dtype)).astype(dtype)
            for name, dtype in COLUMNS.items()
        }
        snapshot = Snapshot(
            columns=EventLog(
                session_ids=[str(value) for value in body["session_ids"]],
                item_ids=[str(value) for value in body["item_ids"]],
                categories=[str(value) for value in body["categories"]],
                **arrays,
            ),
            offsets=_checked_offsets(body["offsets"]),
            sequence=int(body["sequence"]),
            generation=int(body["generation"]),
        )
    except _FORMAT_ERRORS as exc:
        raise DataFormatError(f"the snapshot is unreadable: {exc}", path=str(path)) from exc
    _check_columns(snapshot.columns, path)
    return snapshot


def _on_disk(dtype: type[np.generic]) -> np.dtype[Any]:
    return np.dtype(dtype).newbyteorder("<")


def _checked_row(raw: Any) -> Row:
    key, session, item, ts, event_type, category, price = raw
    if not (isinstance(session, str) and isinstance(item, str)):
        raise ValueError("session and item ids must be strings")
    if not 0 <= int(event_type) < len(EVENT_TYPES):
        raise ValueError(f"unknown event type code {event_type}")
    return (
        int(key),
        session,
        item,
        int(ts),
        int(event_type),
        None if category is None else str(category),
        None if price is None else float(price),
    )


def _checked_offsets(raw: Any) -> dict[str, int]:
    return {str(key): int(value) for key, value in raw.items()}


def _check_columns(columns: EventLog, path: Path) -> None:
    lengths = {getattr(columns, name).shape[0] for name in COLUMNS}
    if len(lengths) > 1:
        raise DataFormatError("the snapshot's columns differ in length", path=str(path))
    for codes, vocabulary, lowest in (
        (columns.session, columns.session_ids, 0),
        (columns.item, columns.item_ids, 0),
        (columns.category, columns.categories, -1),
    ):
        if codes.shape[0] and not lowest <= int(codes.min()) <= int(codes.max()) < len(vocabulary):
            raise DataFormatError("the snapshot's codes exceed its vocabularies", path=str(path))
