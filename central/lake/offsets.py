"""How far the lake holds each source partition: the truth a writer resumes from.

The offsets a data file covers are in its name (:mod:`central.lake.names`), so the lake's
high-water mark of a Kafka partition is the largest ``last`` offset among its files' names.
Retention deletes whole days, and with them names: before it does, it records the marks
of what it deletes in ``_manifests/watermarks.json``, which counts as well. The lake also
records, in ``_manifests/source.json``, the topic it is fed from, so that a writer pointed
at another topic's lake fails rather than mixing two topics' offsets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from central.lake.errors import LakeCorruptError, LakeError
from central.lake.layout import LakeLayout
from central.lake.names import parse_name
from runtime.files import atomic_write_bytes

WATERMARKS: Final = "watermarks.json"
SOURCE: Final = "source.json"


def high_water(layout: LakeLayout, dates: Iterable[str] | None = None) -> dict[int, int]:
    """The largest committed offset of each partition (``-1`` for imports), from the
    names of the files of ``dates`` (all days by default) and the retention marks."""
    marks = dict(read_watermarks(layout)) if dates is None else {}
    for date in layout.days() if dates is None else dates:
        for path in layout.day_files(date):
            name = parse_name(path.name)
            if name is not None and name.last > marks.get(name.partition, -1):
                marks[name.partition] = name.last
    return marks


def read_watermarks(layout: LakeLayout) -> dict[int, int]:
    path = layout.manifests / WATERMARKS
    if not path.is_file():
        return {}
    try:
        return {int(k): int(v) for k, v in json.loads(path.read_bytes()).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise LakeCorruptError(f"{path}: unreadable watermarks ({exc})") from exc


def save_watermarks(layout: LakeLayout, marks: Mapping[int, int]) -> None:
    """Raises the recorded marks to ``marks`` where those are higher."""
    merged = read_watermarks(layout)
    for partition, offset in marks.items():
        merged[partition] = max(offset, merged.get(partition, -1))
    layout.manifests.mkdir(parents=True, exist_ok=True)
    encoded = json.dumps({str(k): v for k, v in sorted(merged.items())}).encode()
    atomic_write_bytes(layout.manifests / WATERMARKS, encoded)


def claim_topic(layout: LakeLayout, topic: str) -> None:
    """Records ``topic`` as the lake's source, or checks it is the one recorded."""
    path: Path = layout.manifests / SOURCE
    if path.is_file():
        try:
            recorded = str(json.loads(path.read_bytes())["topic"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LakeCorruptError(f"{path}: unreadable source record ({exc})") from exc
        if recorded != topic:
            raise LakeError(
                f"lake {layout.root} is fed from topic {recorded!r}, not {topic!r}",
                field="topic",
            )
        return
    layout.manifests.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps({"topic": topic}).encode())
